"""PostgreSQL and MySQL/MariaDB JDBC URLs, the URL syntax:
``jdbc:postgresql://host[:port][/database][?k=v&k=v]`` (likewise ``jdbc:mysql:``, ``jdbc:mariadb:``)."""

from __future__ import annotations

from urllib.parse import unquote

from bridgehead.plugins.sql.jdbc.ignored import MYSQL_IGNORED, POSTGRESQL_IGNORED
from bridgehead.plugins.sql.jdbc.parts import (
    Pairs,
    Props,
    check_props,
    credentials_error,
    parse_bool,
    parse_host_port,
)

_PG_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Connector/J (MySQL) and MariaDB Connector/J sslMode values, upper-cased with - as _, to
# (FORCETLS, SSLVERIFY) of MariaDB Connector/ODBC 3.1. Its SSLVERIFY checks the chain and the
# host name, so VERIFY_CA comes out stricter than asked. Connector/ODBC has no "use TLS if the
# server offers it" setting: PREFERRED gets no key, which is what an absent sslMode gets too.
_MYSQL_SSLMODES: dict[str, tuple[bool, bool]] = {
    "DISABLED": (False, False),
    "DISABLE": (False, False),
    "PREFERRED": (False, False),
    "REQUIRED": (True, False),
    "TRUST": (True, False),
    "VERIFY_CA": (True, True),
    "VERIFY_IDENTITY": (True, True),
    "VERIFY_FULL": (True, True),
}


def _split_url(body: str, dialect: str) -> tuple[str, str | None, Props]:
    """Split ``host[:port][/database][?props]`` (after ``//``); percent-decode database and props."""
    # A user:password@ part is refused before anything is split, so that no piece of a
    # password (which may hold / ? or &) can end up in another message.
    if "@" in body:
        raise credentials_error(
            "an '@', as in user:password@host; if the '@' belongs to a database name or property, write it as %40"
        )
    main, _, query = body.partition("?")
    authority, slash, path = main.partition("/")
    database: str | None = None
    if slash and path:
        if "/" in path:
            raise ValueError(f"the {dialect} JDBC URL has more than a database name after the host")
        database = unquote(path)
    props: Props = {}
    for part in query.split("&"):
        if not part:
            continue
        raw_key, _, raw_value = part.partition("=")
        key = unquote(raw_key).strip()
        if not key:
            raise ValueError(f"a property in the query of the {dialect} JDBC URL has no name before '='")
        props[key.lower()] = (key, unquote(raw_value))
    return authority, database, props


def postgresql(rest: str) -> Pairs:
    dialect = "PostgreSQL"
    if not rest.startswith("//"):
        raise ValueError(
            "a PostgreSQL JDBC URL is translated only in the form jdbc:postgresql://host[:port][/database][?properties]"
        )
    authority, database, props = _split_url(rest[2:], dialect)
    check_props(props, dialect, frozenset({"ssl", "sslmode", "sslrootcert"}), POSTGRESQL_IGNORED)
    host, port, _ = parse_host_port(authority, 5432, dialect)
    pairs: Pairs = [("Server", host), ("Port", str(port))]
    if database:
        pairs.append(("Database", database))
    # pgjdbc: sslmode wins over ssl; ssl=true (or a bare ssl) means verify-full, not require;
    # neither means prefer. psqlODBC defaults to disable, so prefer is always written out:
    # leaving it out would turn the JDBC default "encrypt when the server can" into plain text.
    sslmode = "prefer"
    if "sslmode" in props:
        key, value = props["sslmode"]
        sslmode = value.strip().lower()
        if sslmode not in _PG_SSLMODES:
            raise ValueError(
                f"property {key!r} of the PostgreSQL JDBC URL must be one of {', '.join(_PG_SSLMODES)}, not {value!r}"
            )
    elif "ssl" in props:
        key, value = props["ssl"]
        if value.strip() == "" or parse_bool(dialect, key, value):
            sslmode = "verify-full"
    pairs.append(("SSLmode", sslmode))
    if "sslrootcert" in props:
        key, value = props["sslrootcert"]
        if not value.strip():
            raise ValueError(f"property {key!r} of the PostgreSQL JDBC URL is empty")
        # psqlODBC hands pqopt to libpq as conninfo, which has its own quoting.
        pairs.append(("pqopt", f"sslrootcert={_libpq_quote(value)}"))
    return pairs


def _libpq_quote(value: str) -> str:
    if value and not any(c.isspace() or c in "'\\" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def mysql(rest: str) -> Pairs:
    return _mysql_like(rest, "MySQL", "jdbc:mysql://")


def mariadb(rest: str) -> Pairs:
    return _mysql_like(rest, "MariaDB", "jdbc:mariadb://")


_MYSQL_TRANSLATED = frozenset({"sslmode", "usessl", "requiressl", "verifyservercertificate", "trustservercertificate"})


def _mysql_like(rest: str, dialect: str, prefix: str) -> Pairs:
    if not rest.startswith("//"):
        raise ValueError(
            f"a {dialect} JDBC URL is translated only in the single-host form {prefix}host[:port][/database]"
            "[?properties], not the load-balancing, replication, failover or sequential forms"
        )
    authority, database, props = _split_url(rest[2:], dialect)
    check_props(props, dialect, _MYSQL_TRANSLATED, MYSQL_IGNORED)
    if authority.startswith("(") or authority.lower().startswith("address="):
        raise ValueError(f"the key-value host form of the {dialect} JDBC URL is not translated; use host[:port]")
    host, port, _ = parse_host_port(authority, 3306, dialect)
    pairs: Pairs = [("Server", host), ("Port", str(port))]
    if database:
        pairs.append(("Database", database))

    def flag(name: str) -> bool | None:
        return parse_bool(dialect, props[name][0], props[name][1]) if name in props else None

    # Connector/J: sslMode, when given, decides alone; useSSL, requireSSL and the certificate
    # flags are the older spelling and count only without it.
    if "sslmode" in props:
        key, value = props["sslmode"]
        mode = value.strip().upper().replace("-", "_")
        if mode not in _MYSQL_SSLMODES:
            allowed = (
                "DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY (or disable, trust, verify-ca, verify-full)"
            )
            raise ValueError(f"property {key!r} of the {dialect} JDBC URL must be one of {allowed}, not {value!r}")
        force, verify = _MYSQL_SSLMODES[mode]
    else:
        force = bool(flag("usessl")) or bool(flag("requiressl"))
        verify = force and (flag("verifyservercertificate") is True or flag("trustservercertificate") is False)
    if force:
        pairs.append(("FORCETLS", "1"))
    if verify:
        pairs.append(("SSLVERIFY", "1"))
    return pairs
