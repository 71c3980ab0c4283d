"""The ``sql`` plugin's job params and connection-profile keys (msgspec structs, no I/O).

A profile names its database in exactly one way: an ODBC ``connection_string``, a ``dsn``
from odbc.ini, or a ``jdbc_url`` as a MID Server admin has it (translated by ``jdbc/``).
Secrets never sit in any of them: the profile's ``credential`` supplies user and password,
so they reach neither the config file's readers nor the logs.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from bridgehead.plugins.sql import odbc_string
from bridgehead.plugins.sql.jdbc import jdbc_to_odbc
from bridgehead.sdk import Params, Profile

# A parameter is a JSON scalar; the driver binds it, so it is never spliced into the SQL.
Scalar = str | int | float | bool | None

MAX_QUERY_CHARS = 1_000_000
MAX_PARAMETERS = 10_000
# Keys that carry secrets in an ODBC connection string, across drivers.
_SECRET_KEYS = frozenset({"pwd", "password", "passwd", "pass", "accesstoken", "access_token"})
_USER_KEYS = frozenset({"uid", "user", "username", "user id", "userid"})


class SqlParams(Params):
    """Params of one ``sql`` job; see docs/plugins/sql.md."""

    connection: str
    query: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_QUERY_CHARS)]
    parameters: Annotated[list[Scalar], msgspec.Meta(max_length=MAX_PARAMETERS)] = []
    max_rows: Annotated[int, msgspec.Meta(ge=0)] | None = None

    def __post_init__(self) -> None:
        if not self.query.strip():
            raise ValueError("query is blank")
        if "\x00" in self.query:
            raise ValueError("query has a NUL character")


class SqlProfile(Profile):
    """Keys of a ``[connections.NAME]`` table with ``plugin = "sql"``."""

    connection_string: str | None = None
    dsn: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    jdbc_url: str | None = None
    # The ODBC driver a jdbc_url is translated to, when odbcinst.ini names it otherwise.
    odbc_driver: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    read_only: bool = True
    query_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 300.0
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 15.0
    max_rows: Annotated[int, msgspec.Meta(ge=0)] | None = None
    pool_size: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4
    fetch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    # Pooled connections idle longer than this are closed rather than reused.
    idle_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 300.0

    def __post_init__(self) -> None:
        given = [k for k in ("connection_string", "dsn", "jdbc_url") if getattr(self, k) is not None]
        if len(given) != 1:
            what = " and ".join(given) if given else "none of them"
            raise ValueError(f"give exactly one of connection_string, dsn or jdbc_url (got {what})")
        if self.odbc_driver is not None and self.jdbc_url is None:
            raise ValueError("odbc_driver only applies to a jdbc_url")
        if self.connection_string is not None:
            check_connection_string(self.connection_string, has_credential=self.credential is not None)
        if self.dsn is not None and any(c in self.dsn for c in ";{}=\x00"):
            raise ValueError("dsn is a data source name from odbc.ini; it may not contain ; { } or =")
        if self.jdbc_url is not None:
            jdbc_to_odbc(self.jdbc_url, driver=self.odbc_driver)  # raises ValueError, with the reason

    def base_connection_string(self) -> str:
        """The profile's connection string, without credentials or Bridgehead's own options."""
        if self.connection_string is not None:
            return self.connection_string
        if self.dsn is not None:
            return odbc_string.build([("DSN", self.dsn)])
        # One of the three is given: __post_init__ checked it.
        return jdbc_to_odbc(self.jdbc_url or "", driver=self.odbc_driver)


def check_connection_string(text: str, *, has_credential: bool) -> None:
    """Raise ``ValueError`` for an unparsable string, or one that holds a secret."""
    pairs = odbc_string.parse(text)
    if not pairs:
        raise ValueError("connection_string is empty")
    for key, _value in pairs:
        lowered = key.lower()
        if lowered in _SECRET_KEYS:
            # The value is not repeated here: the message ends up in logs.
            raise ValueError(
                f"connection_string holds a secret ({key}=...); put it in a [credentials.NAME] table "
                "and name that in the profile's credential key"
            )
        if lowered in _USER_KEYS and has_credential:
            # Which of two user names a driver takes differs by driver: allow only one.
            raise ValueError(f"connection_string names the user ({key}=...) and so does the profile's credential")
