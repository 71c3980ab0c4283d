"""JDBC URLs, as MID Server admins have them, translated into ODBC connection strings.

An admin moving a ServiceNow MID Server job to Bridgehead has a JDBC URL that works; making
them rewrite it by hand for an ODBC driver invites mistakes. So a profile may give its
``jdbc_url`` and this module translates it. The translation is strict on purpose: a property
that is not understood is refused rather than dropped, because a dropped ``sslmode`` or
``encrypt`` would quietly give a weaker connection than the one the admin had. Properties
known to only tune the Java driver (caches, timeouts, Java-side encodings) are ignored; they
are listed per dialect below and in docs/plugins/sql-jdbc.md. Anything else: write the
profile's ``connection_string`` instead, which is passed to the driver as written.

Credentials are refused wherever they sit in the URL: the profile's ``credential`` supplies
them, so they reach neither the config file's readers nor the logs. Error messages name the
offending part of the URL, never its value, for the same reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote

from bridgehead.plugins.sql import odbc_string

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

# Properties that only tune the Java driver (statement caches, Java-side timeouts and
# encodings, logging) and have no effect worth carrying over: ignored. All names lowercase;
# properties are matched case-insensitively. Timeouts are among them because the sql
# profile has its own (connect_timeout_s, query_timeout_s).
POSTGRESQL_IGNORED = frozenset(
    {
        "applicationname",
        "assumeminserverversion",
        "binarytransfer",
        "cancelsignaltimeout",
        "connecttimeout",
        "defaultrowfetchsize",
        "loggerfile",
        "loggerlevel",
        "logintimeout",
        "preparedstatementcachequeries",
        "preparedstatementcachesizemib",
        "preparethreshold",
        "rewritebatchedinserts",
        "sockettimeout",
        "tcpkeepalive",
    }
)
MYSQL_IGNORED = frozenset(
    {
        "allowpublickeyretrieval",
        "autoreconnect",
        "cacheprepstmts",
        "characterencoding",
        "connecttimeout",
        "initialtimeout",
        "logintimeout",
        "maxreconnects",
        "prepstmtcachesize",
        "prepstmtcachesqllimit",
        "rewritebatchedstatements",
        "servertimezone",
        "sockettimeout",
        "tcpkeepalive",
        "usejdbccomplianttimezoneshift",
        "uselegacydatetimecode",
        "useserverprepstmts",
        "useunicode",
        "zerodatetimebehavior",
    }
)
SQLSERVER_IGNORED = frozenset(
    {
        "applicationname",
        "cancelquerytimeout",
        "disablestatementpooling",
        "lastupdatecount",
        "logintimeout",
        "packetsize",
        "querytimeout",
        "responsebuffering",
        "selectmethod",
        "sendstringparametersasunicode",
        "sendtimeasdatetime",
        "sockettimeout",
        "statementpoolingcachesize",
        "workstationid",
        "xopenstates",
    }
)
JTDS_IGNORED = frozenset(
    {
        "appname",
        "batchsize",
        "buffermaxmemory",
        "bufferminpackets",
        "cachemetadata",
        "charset",
        "lastupdatecount",
        "logintimeout",
        "maxstatements",
        "packetsize",
        "preparesql",
        "progname",
        "sendstringparametersasunicode",
        "socketkeepalive",
        "sockettimeout",
        "tcpnodelay",
        "tds",
        "usecursors",
        "uselobs",
        "wsid",
    }
)

# Properties that carry a user name or password, in any dialect (lowercase).
_CREDENTIAL_KEYS = frozenset({"user", "username", "password", "pwd", "uid", "password1", "password2", "password3"})
_CREDENTIAL_IN_PROPS = re.compile(r"(?:^|[;&])\s*(user|username|password|pwd|uid|password[123])\s*=", re.IGNORECASE)

# Host names (letters, digits, . _ -; no leading dot or dash) and IPv4 addresses.
_HOST = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[A-Za-z0-9_.-]+)?")
_SQLSERVER_INSTANCE = re.compile(r"[A-Za-z0-9_$#-]+")
_ORACLE_SID = re.compile(r"[A-Za-z0-9_$#]+")
_ORACLE_SERVICE = re.compile(r"[A-Za-z0-9_$#][A-Za-z0-9_.$#-]*")
_ORACLE_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_.$#-]*")
_SUBPROTOCOL = re.compile(r"jdbc:([A-Za-z0-9_.+-]{1,32}):", re.IGNORECASE)
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
_SQLSERVER_ENCRYPT = {"true": "yes", "mandatory": "yes", "false": "no", "optional": "no", "strict": "strict"}
# jTDS ssl= to (Encrypt, TrustServerCertificate) of ODBC Driver 18. jTDS never checks the
# certificate except with "authenticate"; "request" means TLS when the server offers it,
# which every SQL Server since 2005 does.
_JTDS_SSL = {"off": ("no", None), "request": ("yes", "yes"), "require": ("yes", "yes"), "authenticate": ("yes", "no")}

_FULL_CONTROL = "write the profile's connection_string instead of jdbc_url for full control"

Pairs = list[tuple[str, str]]
Props = dict[str, tuple[str, str]]  # lowercase name -> (name as written, value)


def jdbc_to_odbc(url: str, *, driver: str | None = None) -> str:
    """The ODBC connection string (no credentials) for the JDBC ``url``; ``driver`` overrides the driver name.

    Raises ``ValueError`` saying which part of the URL is not supported, and what is.
    """
    if driver is not None and not driver.strip():
        raise ValueError("odbc_driver is blank")
    text = url.strip()
    lowered = text.lower()
    translators: tuple[tuple[str, str, Callable[[str], Pairs]], ...] = (
        ("jdbc:postgresql:", "postgresql", _postgresql),
        ("jdbc:mysql:", "mysql", _mysql),
        ("jdbc:mariadb:", "mysql", _mariadb),
        ("jdbc:sqlserver:", "sqlserver", _sqlserver),
        ("jdbc:jtds:", "sqlserver", _jtds),
        ("jdbc:oracle:", "oracle", _oracle),
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


def _credentials(where: str) -> ValueError:
    return ValueError(
        f"the JDBC URL holds credentials ({where}); remove them and put the user name and password in "
        "a [credentials.NAME] table named by the profile's credential key, so that they stay out of the "
        "config file and the logs"
    )


def _unknown(dialect: str, key: str, translated: str) -> ValueError:
    return ValueError(
        f"property {key!r} of the {dialect} JDBC URL has no ODBC translation (translated: {translated}; "
        f"properties that only tune the Java driver are ignored, see docs/plugins/sql-jdbc.md); {_FULL_CONTROL}"
    )


def _check_props(props: Props, dialect: str, translated: frozenset[str], ignored: frozenset[str]) -> None:
    """Refuse credentials first (whatever else is wrong), then properties not understood."""
    for lowered, (key, _value) in props.items():
        if lowered in _CREDENTIAL_KEYS:
            raise _credentials(f"the {key!r} property")
    for lowered, (key, _value) in props.items():
        if lowered not in translated and lowered not in ignored:
            raise _unknown(dialect, key, ", ".join(sorted(translated)))


def _bool(dialect: str, key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise ValueError(f"property {key!r} of the {dialect} JDBC URL must be true or false, not {value!r}")


def _port(text: str, dialect: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(f"the port {text!r} in the {dialect} JDBC URL is not a number from 1 to 65535")
    return int(text)


def _host(text: str, dialect: str) -> tuple[str, bool]:
    """Validate a host (``name``, IPv4 or ``[IPv6]``); return it without brackets and whether it is IPv6."""
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        if not _IPV6.fullmatch(inner):
            raise ValueError(f"{text!r} in the {dialect} JDBC URL is not an IPv6 address")
        return inner, True
    if not _HOST.fullmatch(text):
        raise ValueError(
            f"the host {text!r} in the {dialect} JDBC URL is not a host name or IP address "
            "(an IPv6 address goes in brackets, e.g. [::1])"
        )
    return text, False


def _host_port(authority: str, default_port: int, dialect: str) -> tuple[str, int, bool]:
    """``host[:port]`` or ``[ipv6][:port]`` -> (host, port, is_ipv6)."""
    if not authority:
        raise ValueError(f"the {dialect} JDBC URL has no host after '//'")
    if "," in authority:
        raise ValueError(
            f"the {dialect} JDBC URL names several hosts; only one host is translated (the ODBC driver "
            f"connects to one server); name one, or {_FULL_CONTROL}"
        )
    if authority.startswith("["):
        close = authority.find("]")
        if close == -1:
            raise ValueError(f"the IPv6 address in the {dialect} JDBC URL has no closing ']'")
        host_text, rest = authority[: close + 1], authority[close + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"expected ':port' after the IPv6 address in the {dialect} JDBC URL")
        port_text = rest[1:] if rest else None
    else:
        if authority.count(":") > 1:
            raise ValueError(f"an IPv6 address in the {dialect} JDBC URL must be in brackets, e.g. [::1]:5432")
        host_text, colon, port_text_or_empty = authority.partition(":")
        port_text = port_text_or_empty if colon else None
    host, is_ipv6 = _host(host_text, dialect)
    port = default_port if port_text is None else _port(port_text, dialect)
    return host, port, is_ipv6


# --- PostgreSQL and MySQL/MariaDB: URL syntax, //host[:port][/database][?k=v&k=v] -------------


def _split_url(body: str, dialect: str) -> tuple[str, str | None, Props]:
    """Split ``host[:port][/database][?props]`` (after ``//``); percent-decode database and props."""
    # A user:password@ part is refused before anything is split, so that no piece of a
    # password (which may hold / ? or &) can end up in another message.
    if "@" in body:
        raise _credentials(
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


def _postgresql(rest: str) -> Pairs:
    dialect = "PostgreSQL"
    if not rest.startswith("//"):
        raise ValueError(
            "a PostgreSQL JDBC URL is translated only in the form jdbc:postgresql://host[:port][/database][?properties]"
        )
    authority, database, props = _split_url(rest[2:], dialect)
    _check_props(props, dialect, frozenset({"ssl", "sslmode", "sslrootcert"}), POSTGRESQL_IGNORED)
    host, port, _ = _host_port(authority, 5432, dialect)
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
        if value.strip() == "" or _bool(dialect, key, value):
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


def _mysql(rest: str) -> Pairs:
    return _mysql_like(rest, "MySQL", "jdbc:mysql://")


def _mariadb(rest: str) -> Pairs:
    return _mysql_like(rest, "MariaDB", "jdbc:mariadb://")


_MYSQL_TRANSLATED = frozenset({"sslmode", "usessl", "requiressl", "verifyservercertificate", "trustservercertificate"})


def _mysql_like(rest: str, dialect: str, prefix: str) -> Pairs:
    if not rest.startswith("//"):
        raise ValueError(
            f"a {dialect} JDBC URL is translated only in the single-host form {prefix}host[:port][/database]"
            "[?properties], not the load-balancing, replication, failover or sequential forms"
        )
    authority, database, props = _split_url(rest[2:], dialect)
    _check_props(props, dialect, _MYSQL_TRANSLATED, MYSQL_IGNORED)
    if authority.startswith("(") or authority.lower().startswith("address="):
        raise ValueError(f"the key-value host form of the {dialect} JDBC URL is not translated; use host[:port]")
    host, port, _ = _host_port(authority, 3306, dialect)
    pairs: Pairs = [("Server", host), ("Port", str(port))]
    if database:
        pairs.append(("Database", database))

    def flag(name: str) -> bool | None:
        return _bool(dialect, props[name][0], props[name][1]) if name in props else None

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


# --- SQL Server: jdbc:sqlserver://host[\instance][:port][;k=v;k=v] and jTDS --------------------


def _semicolon_props(text: str, dialect: str) -> Props:
    """Parse ``k=v;k=v`` (braced values allowed, as mssql-jdbc allows them); names case-insensitive."""
    # Before parsing: a password with an unbraced ';' would otherwise fail as a parse error.
    found = _CREDENTIAL_IN_PROPS.search(text)
    if found:
        raise _credentials(f"the {found.group(1)!r} property")
    try:
        pairs = odbc_string.parse(text)
    except ValueError as exc:
        raise ValueError(f"the properties of the {dialect} JDBC URL cannot be read: {exc}") from None
    return {key.lower(): (key, value) for key, value in pairs}


def _no_ipv6(host_text: str, dialect: str) -> None:
    if host_text.startswith("["):
        raise ValueError(
            f"an IPv6 address in a {dialect} JDBC URL is not translated; use a host name, or {_FULL_CONTROL}"
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


def _sqlserver(rest: str) -> Pairs:
    dialect = "SQL Server"
    if not rest.startswith("//"):
        raise ValueError(
            "a SQL Server JDBC URL is translated only in the form "
            "jdbc:sqlserver://host[\\instance][:port][;property=value...]"
        )
    server_part, _, prop_text = rest[2:].partition(";")
    if "@" in server_part:
        raise _credentials("an '@', as in user:password@host")
    props = _semicolon_props(prop_text, dialect)
    _check_props(props, dialect, _SQLSERVER_TRANSLATED, SQLSERVER_IGNORED)

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
    host, _ = _host(host_text, dialect)
    port: int | None = None
    if colon:
        port = _port(port_text, dialect)
    elif port_prop is not None:
        port = _port(port_prop[1].strip(), dialect)
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
        pairs.append(("TrustServerCertificate", "yes" if _bool(dialect, key, value) else "no"))
    if "hostnameincertificate" in props:
        key, value = props["hostnameincertificate"]
        if not value.strip():
            raise ValueError(f"property {key!r} of the {dialect} JDBC URL is empty")
        pairs.append(("HostNameInCertificate", value.strip()))
    if "multisubnetfailover" in props:
        key, value = props["multisubnetfailover"]
        pairs.append(("MultiSubnetFailover", "yes" if _bool(dialect, key, value) else "no"))
    return pairs


def _jtds(rest: str) -> Pairs:
    dialect = "jTDS"
    if not rest.lower().startswith("sqlserver://"):
        raise ValueError(
            "a jTDS JDBC URL is translated only for SQL Server, in the form "
            "jdbc:jtds:sqlserver://host[:port][/database][;property=value...] (not Sybase)"
        )
    main, _, prop_text = rest[len("sqlserver://") :].partition(";")
    if "@" in main:
        raise _credentials("an '@', as in user:password@host")
    props = _semicolon_props(prop_text, dialect)
    _check_props(props, dialect, frozenset({"databasename", "instance", "portnumber", "ssl"}), JTDS_IGNORED)
    _no_ipv6(main, dialect)
    authority, slash, database = main.partition("/")
    host_text, colon, port_text = authority.partition(":")
    if not host_text:
        raise ValueError(f"the {dialect} JDBC URL names no server (jdbc:jtds:sqlserver://host...)")
    host, _ = _host(host_text, dialect)
    if "databasename" in props and database:
        raise ValueError(f"the {dialect} JDBC URL gives the database both after '/' and as a property; keep one")
    if "portnumber" in props and colon:
        raise ValueError(f"the {dialect} JDBC URL gives the port both after ':' and as a property; keep one")
    port: int | None = None
    if colon:
        port = _port(port_text, dialect)
    elif "portnumber" in props:
        port = _port(props["portnumber"][1].strip(), dialect)
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


# --- Oracle thin: @host:port:SID, @[//]host[:port]/service, @(DESCRIPTION=...), @alias -----------


def _oracle(rest: str) -> Pairs:
    if not rest.lower().startswith("thin:"):
        raise ValueError(
            "an Oracle JDBC URL is translated only for the thin driver: jdbc:oracle:thin:@host:port:SID, "
            "jdbc:oracle:thin:@//host:port/service or jdbc:oracle:thin:@(DESCRIPTION=...)"
        )
    after = rest[len("thin:") :]
    at = after.find("@")
    if at == -1:
        raise ValueError("an Oracle JDBC URL needs '@' before the database address: jdbc:oracle:thin:@...")
    # jdbc:oracle:thin:user/password@... : the first '@' is the separator, whatever a password holds.
    if after[:at].strip():
        raise _credentials("user/password before '@'")
    target = after[at + 1 :].strip()
    if not target:
        raise ValueError(
            "the Oracle JDBC URL has nothing after '@'; "
            "expected host:port:SID, //host:port/service or (DESCRIPTION=...)"
        )
    if target.startswith("("):
        return [("DBQ", _oracle_descriptor(target))]
    if "?" in target:
        raise ValueError(f"connection properties after '?' in an Oracle JDBC URL are not translated; {_FULL_CONTROL}")
    lowered = target.lower()
    if lowered.startswith("tcps://"):
        return [("DBQ", _oracle_ezconnect(target[len("tcps://") :], "tcps:"))]
    if lowered.startswith("tcp://"):
        return [("DBQ", _oracle_ezconnect(target[len("tcp://") :], ""))]
    if target.startswith("//"):
        return [("DBQ", _oracle_ezconnect(target[2:], ""))]
    if _ORACLE_ALIAS.fullmatch(target):
        # A bare name is a net service name from tnsnames.ora under the agent's TNS_ADMIN.
        return [("DBQ", target)]
    host, port, is_ipv6, separator, name = _oracle_address(target)
    if separator == ":":
        if not _ORACLE_SID.fullmatch(name):
            raise ValueError(f"the SID {name!r} in the Oracle JDBC URL is not a SID (letters, digits, _ $ #)")
        return [
            (
                "DBQ",
                f"(DESCRIPTION=(ADDRESS=(PROTOCOL=TCP)(HOST={host})(PORT={port}))(CONNECT_DATA=(SID={name})))",
            )
        ]
    return [("DBQ", _ezconnect(host, port, is_ipv6, name, ""))]


def _oracle_address(text: str) -> tuple[str, int, bool, str, str]:
    """``host:port:SID``, ``host[:port]/service`` (host may be ``[ipv6]``) -> parts and the separator."""
    dialect = "Oracle"
    if "," in text:
        raise ValueError(
            "the Oracle JDBC URL names several hosts; only one host is translated outside a "
            f"(DESCRIPTION=...), which may list several; or {_FULL_CONTROL}"
        )
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            raise ValueError("the IPv6 address in the Oracle JDBC URL has no closing ']'")
        host_text, rest = text[: close + 1], text[close + 1 :]
    else:
        cut = min((i for i in (text.find(":"), text.find("/")) if i != -1), default=len(text))
        host_text, rest = text[:cut], text[cut:]
    host, is_ipv6 = _host(host_text, dialect)
    port = 1521
    if rest.startswith(":"):
        cut = min((i for i in (rest.find(":", 1), rest.find("/", 1)) if i != -1), default=len(rest))
        port_text, rest = rest[1:cut], rest[cut:]
        if not rest and not port_text.isdigit():
            raise ValueError(
                f"{port_text!r} in the Oracle JDBC URL is not a port; the SID form is "
                "jdbc:oracle:thin:@host:port:SID and the service form jdbc:oracle:thin:@//host:port/service"
            )
        port = _port(port_text, dialect)
        if rest.startswith(":"):
            return host, port, is_ipv6, ":", rest[1:]
    if not rest.startswith("/") or len(rest) == 1:
        raise ValueError(
            "the Oracle JDBC URL names no database: use @host:port:SID, @//host:port/service or @(DESCRIPTION=...)"
        )
    return host, port, is_ipv6, "/", rest[1:]


def _oracle_ezconnect(text: str, protocol: str) -> str:
    host, port, is_ipv6, separator, name = _oracle_address(text)
    if separator != "/":
        raise ValueError(
            "the //host:port/service form of an Oracle JDBC URL takes a service name after '/'; "
            "for a SID use jdbc:oracle:thin:@host:port:SID"
        )
    return _ezconnect(host, port, is_ipv6, name, protocol)


def _ezconnect(host: str, port: int, is_ipv6: bool, service: str, protocol: str) -> str:
    if not _ORACLE_SERVICE.fullmatch(service):
        raise ValueError(
            f"the service name {service!r} in the Oracle JDBC URL is not translated (letters, digits, . _ - $ #; "
            "no server type or instance name); use the (DESCRIPTION=...) form, or "
            f"{_FULL_CONTROL}"
        )
    shown = f"[{host}]" if is_ipv6 else host
    return f"{protocol}//{shown}:{port}/{service}"


def _oracle_descriptor(text: str) -> str:
    """Check that a ``(DESCRIPTION=...)`` is one balanced parenthesised group; return it as given."""
    depth = 0
    closed_at = -1  # where the first group closes
    for i, c in enumerate(text):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                break
            if depth == 0 and closed_at == -1:
                closed_at = i
    if depth != 0:
        raise ValueError("the (DESCRIPTION=...) in the Oracle JDBC URL has unbalanced parentheses")
    if text[closed_at + 1 :].strip():
        raise ValueError(
            "the Oracle JDBC URL has text after the closing ')' of its (DESCRIPTION=...); "
            f"connection properties are not translated; {_FULL_CONTROL}"
        )
    keyword = text[1:].lstrip().split("=", 1)[0].strip().upper()
    if keyword not in ("DESCRIPTION", "DESCRIPTION_LIST"):
        raise ValueError("an Oracle JDBC URL's '@(' must open a (DESCRIPTION=...) or (DESCRIPTION_LIST=...)")
    return text
