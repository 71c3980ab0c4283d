"""SQL Server JDBC URLs, ``jdbc:sqlserver://host[\\instance][:port][;k=v;k=v]``, and jTDS's
``jdbc:jtds:sqlserver://host[:port][/database][;k=v]``, for Microsoft ODBC Driver 18."""

from __future__ import annotations

import re

from bridgehead.plugins.sql import odbc_string
from bridgehead.plugins.sql.jdbc.ignored import JTDS_IGNORED, SQLSERVER_IGNORED
from bridgehead.plugins.sql.jdbc.parts import (
    FULL_CONTROL,
    Pairs,
    Props,
    check_props,
    credentials_error,
    parse_bool,
    parse_host,
    parse_port,
)

# Properties that carry a user name or password, found before the properties are parsed.
_CREDENTIAL_IN_PROPS = re.compile(r"(?:^|[;&])\s*(user|username|password|pwd|uid|password[123])\s*=", re.IGNORECASE)
_SQLSERVER_INSTANCE = re.compile(r"[A-Za-z0-9_$#-]+")
_SQLSERVER_ENCRYPT = {"true": "yes", "mandatory": "yes", "false": "no", "optional": "no", "strict": "strict"}
# jTDS ssl= to (Encrypt, TrustServerCertificate) of ODBC Driver 18. jTDS never checks the
# certificate except with "authenticate"; "request" means TLS when the server offers it,
# which every SQL Server since 2005 does.
_JTDS_SSL = {"off": ("no", None), "request": ("yes", "yes"), "require": ("yes", "yes"), "authenticate": ("yes", "no")}


def _semicolon_props(text: str, dialect: str) -> Props:
    """Parse ``k=v;k=v`` (braced values allowed, as mssql-jdbc allows them); names case-insensitive."""
    # Before parsing: a password with an unbraced ';' would otherwise fail as a parse error.
    found = _CREDENTIAL_IN_PROPS.search(text)
    if found:
        raise credentials_error(f"the {found.group(1)!r} property")
    try:
        pairs = odbc_string.parse(text)
    except ValueError as exc:
        raise ValueError(f"the properties of the {dialect} JDBC URL cannot be read: {exc}") from None
    return {key.lower(): (key, value) for key, value in pairs}


def _no_ipv6(host_text: str, dialect: str) -> None:
    if host_text.startswith("["):
        raise ValueError(
            f"an IPv6 address in a {dialect} JDBC URL is not translated; use a host name, or {FULL_CONTROL}"
        )


def _sqlserver_server(host: str, instance: str | None, port: int | None) -> str:
    # As mssql-jdbc does, an explicit port wins over the instance name (no SQL Browser lookup);
    # a named instance without a port is found by the ODBC driver through SQL Browser.
    if port is not None:
        return f"{host},{port}"
    if instance is not None:
        return f"{host}\\{instance}"
    return f"{host},1433"


def _sqlserver_instance(text: str, dialect: str) -> str:
    if not _SQLSERVER_INSTANCE.fullmatch(text):
        raise ValueError(f"the instance name {text!r} in the {dialect} JDBC URL is not a SQL Server instance name")
    return text


_SQLSERVER_TRANSLATED = frozenset(
    {
        "database",
        "databasename",
        "encrypt",
        "hostnameincertificate",
        "instancename",
        "multisubnetfailover",
        "port",
        "portnumber",
        "servername",
        "trustservercertificate",
    }
)


def sqlserver(rest: str) -> Pairs:
    dialect = "SQL Server"
    if not rest.startswith("//"):
        raise ValueError(
            "a SQL Server JDBC URL is translated only in the form "
            "jdbc:sqlserver://host[\\instance][:port][;property=value...]"
        )
    server_part, _, prop_text = rest[2:].partition(";")
    if "@" in server_part:
        raise credentials_error("an '@', as in user:password@host")
    props = _semicolon_props(prop_text, dialect)
    check_props(props, dialect, _SQLSERVER_TRANSLATED, SQLSERVER_IGNORED)

    def one_of(*names: str) -> tuple[str, str] | None:
        given = [props[n] for n in names if n in props]
        if len(given) > 1:
            raise ValueError(f"the {dialect} JDBC URL gives both {given[0][0]!r} and {given[1][0]!r}; keep one")
        return given[0] if given else None

    _no_ipv6(server_part, dialect)
    host_text, colon, port_text = server_part.partition(":")
    host_text, backslash, instance_text = host_text.partition("\\")
    server_prop = one_of("servername")
    port_prop = one_of("portnumber", "port")
    instance_prop = one_of("instancename")
    for in_url, prop in ((host_text, server_prop), (colon, port_prop), (backslash, instance_prop)):
        if in_url and prop is not None:
            raise ValueError(f"the {dialect} JDBC URL gives {prop[0]!r} as a property and in the URL too; keep one")
    if server_prop is not None:
        _no_ipv6(server_prop[1], dialect)
        host_text, backslash2, instance_in_prop = server_prop[1].partition("\\")
        if backslash2:
            if instance_prop is not None:
                raise ValueError(f"the {dialect} JDBC URL names the instance twice; keep one")
            instance_prop = ("serverName", instance_in_prop)
    if not host_text:
        raise ValueError(f"the {dialect} JDBC URL names no server (jdbc:sqlserver://host...)")
    host, _ = parse_host(host_text, dialect)
    port: int | None = None
    if colon:
        port = parse_port(port_text, dialect)
    elif port_prop is not None:
        port = parse_port(port_prop[1].strip(), dialect)
    instance: str | None = None
    if backslash:
        instance = _sqlserver_instance(instance_text, dialect)
    elif instance_prop is not None:
        instance = _sqlserver_instance(instance_prop[1].strip(), dialect)

    pairs: Pairs = [("Server", _sqlserver_server(host, instance, port))]
    database = one_of("databasename", "database")
    if database is not None and database[1]:
        pairs.append(("Database", database[1]))
    if "encrypt" in props:
        key, value = props["encrypt"]
        encrypt = _SQLSERVER_ENCRYPT.get(value.strip().lower())
        if encrypt is None:
            raise ValueError(f"property {key!r} of the {dialect} JDBC URL must be true, false or strict, not {value!r}")
        pairs.append(("Encrypt", encrypt))
    if "trustservercertificate" in props:
        key, value = props["trustservercertificate"]
        pairs.append(("TrustServerCertificate", "yes" if parse_bool(dialect, key, value) else "no"))
    if "hostnameincertificate" in props:
        key, value = props["hostnameincertificate"]
        if not value.strip():
            raise ValueError(f"property {key!r} of the {dialect} JDBC URL is empty")
        pairs.append(("HostNameInCertificate", value.strip()))
    if "multisubnetfailover" in props:
        key, value = props["multisubnetfailover"]
        pairs.append(("MultiSubnetFailover", "yes" if parse_bool(dialect, key, value) else "no"))
    return pairs


def jtds(rest: str) -> Pairs:
    dialect = "jTDS"
    if not rest.lower().startswith("sqlserver://"):
        raise ValueError(
            "a jTDS JDBC URL is translated only for SQL Server, in the form "
            "jdbc:jtds:sqlserver://host[:port][/database][;property=value...] (not Sybase)"
        )
    main, _, prop_text = rest[len("sqlserver://") :].partition(";")
    if "@" in main:
        raise credentials_error("an '@', as in user:password@host")
    props = _semicolon_props(prop_text, dialect)
    check_props(props, dialect, frozenset({"databasename", "instance", "portnumber", "ssl"}), JTDS_IGNORED)
    _no_ipv6(main, dialect)
    authority, slash, database = main.partition("/")
    host_text, colon, port_text = authority.partition(":")
    if not host_text:
        raise ValueError(f"the {dialect} JDBC URL names no server (jdbc:jtds:sqlserver://host...)")
    host, _ = parse_host(host_text, dialect)
    if "databasename" in props and database:
        raise ValueError(f"the {dialect} JDBC URL gives the database both after '/' and as a property; keep one")
    if "portnumber" in props and colon:
        raise ValueError(f"the {dialect} JDBC URL gives the port both after ':' and as a property; keep one")
    port: int | None = None
    if colon:
        port = parse_port(port_text, dialect)
    elif "portnumber" in props:
        port = parse_port(props["portnumber"][1].strip(), dialect)
    instance = _sqlserver_instance(props["instance"][1].strip(), dialect) if "instance" in props else None
    pairs: Pairs = [("Server", _sqlserver_server(host, instance, port))]
    if "databasename" in props:
        database = props["databasename"][1]
    if "/" in database:
        raise ValueError(f"the {dialect} JDBC URL has more than a database name after the host")
    if database:
        pairs.append(("Database", database))
    if "ssl" in props:
        key, value = props["ssl"]
        mapped = _JTDS_SSL.get(value.strip().lower())
        if mapped is None:
            raise ValueError(
                f"property {key!r} of the {dialect} JDBC URL must be off, request, require or authenticate, "
                f"not {value!r}"
            )
        encrypt, trust = mapped
        pairs.append(("Encrypt", encrypt))
        if trust is not None:
            pairs.append(("TrustServerCertificate", trust))
    return pairs
