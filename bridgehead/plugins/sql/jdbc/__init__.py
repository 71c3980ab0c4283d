"""JDBC URLs, as MID Server admins have them, translated into ODBC connection strings.

An admin moving a ServiceNow MID Server job to Bridgehead has a JDBC URL that works; making
them rewrite it by hand for an ODBC driver invites mistakes. So a profile may give its
``jdbc_url`` and this module translates it. The translation is strict on purpose: a property
that is not understood is refused rather than dropped, because a dropped ``sslmode`` or
``encrypt`` would quietly give a weaker connection than the one the admin had. Properties
known to only tune the Java driver (caches, timeouts, Java-side encodings) are ignored; they
are listed per dialect in ``ignored`` and in docs/plugins/sql-jdbc.md. Anything else: write the
profile's ``connection_string`` instead, which is passed to the driver as written.

Credentials are refused wherever they sit in the URL: the profile's ``credential`` supplies
them, so they reach neither the config file's readers nor the logs. Error messages name the
offending part of the URL, never its value, for the same reason.

The translation of each dialect is its own module (``postgresql_mysql``, ``sqlserver``,
``oracle``); ``parts`` holds what they share, ``ignored`` the Java-only properties.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bridgehead.plugins.sql import odbc_string
from bridgehead.plugins.sql.jdbc.ignored import JTDS_IGNORED, MYSQL_IGNORED, POSTGRESQL_IGNORED, SQLSERVER_IGNORED
from bridgehead.plugins.sql.jdbc.oracle import oracle
from bridgehead.plugins.sql.jdbc.parts import Pairs
from bridgehead.plugins.sql.jdbc.postgresql_mysql import mariadb, mysql, postgresql
from bridgehead.plugins.sql.jdbc.sqlserver import jtds, sqlserver

__all__ = [
    "DEFAULT_DRIVERS",
    "JTDS_IGNORED",
    "MYSQL_IGNORED",
    "POSTGRESQL_IGNORED",
    "SQLSERVER_IGNORED",
    "SUPPORTED_PREFIXES",
    "jdbc_to_odbc",
]

# The ODBC driver names the packages register in odbcinst.ini on Debian and Ubuntu
# (odbc-postgresql, odbc-mariadb, msodbcsql18) and Oracle Instant Client 21's
# odbc_update_ini.sh. A profile's odbc_driver overrides them.
DEFAULT_DRIVERS = {
    "postgresql": "PostgreSQL Unicode",
    "mysql": "MariaDB Unicode",
    "sqlserver": "ODBC Driver 18 for SQL Server",
    "oracle": "Oracle 21 ODBC driver",
}

SUPPORTED_PREFIXES = (
    "jdbc:postgresql://",
    "jdbc:mysql://",
    "jdbc:mariadb://",
    "jdbc:sqlserver://",
    "jdbc:jtds:sqlserver://",
    "jdbc:oracle:thin:@",
)

_SUBPROTOCOL = re.compile(r"jdbc:([A-Za-z0-9_.+-]{1,32}):", re.IGNORECASE)


def jdbc_to_odbc(url: str, *, driver: str | None = None) -> str:
    """The ODBC connection string (no credentials) for the JDBC ``url``; ``driver`` overrides the driver name.

    Raises ``ValueError`` saying which part of the URL is not supported, and what is.
    """
    if driver is not None and not driver.strip():
        raise ValueError("odbc_driver is blank")
    text = url.strip()
    lowered = text.lower()
    translators: tuple[tuple[str, str, Callable[[str], Pairs]], ...] = (
        ("jdbc:postgresql:", "postgresql", postgresql),
        ("jdbc:mysql:", "mysql", mysql),
        ("jdbc:mariadb:", "mysql", mariadb),
        ("jdbc:sqlserver:", "sqlserver", sqlserver),
        ("jdbc:jtds:", "sqlserver", jtds),
        ("jdbc:oracle:", "oracle", oracle),
    )
    for prefix, dialect, translate in translators:
        if lowered.startswith(prefix):
            pairs = translate(text[len(prefix) :])
            name = driver.strip() if driver is not None else DEFAULT_DRIVERS[dialect]
            return odbc_string.build([("Driver", name), *pairs])
    raise _unsupported(text)


def _unsupported(text: str) -> ValueError:
    supported = ", ".join(SUPPORTED_PREFIXES)
    alternatives = "for another database write an ODBC connection_string, or name a dsn from odbc.ini, in the profile"
    if not text.lower().startswith("jdbc:"):
        return ValueError(f"jdbc_url must start with 'jdbc:'; supported are {supported}; {alternatives}")
    # Only a plain word is repeated: whatever follows may be a secret.
    match = _SUBPROTOCOL.match(text)
    which = f"'jdbc:{match.group(1)}:' URLs are" if match else "this kind of JDBC URL is"
    return ValueError(f"{which} not translated; supported are {supported}; {alternatives}")
