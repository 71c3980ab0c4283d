"""Oracle thin-driver JDBC URLs: ``@host:port:SID``, ``@[//]host[:port]/service``,
``@(DESCRIPTION=...)`` and ``@alias`` (a tnsnames.ora name), as the ``DBQ`` of Oracle's ODBC driver."""

from __future__ import annotations

import re

from bridgehead.plugins.sql.jdbc.parts import FULL_CONTROL, Pairs, credentials_error, parse_host, parse_port

_ORACLE_SID = re.compile(r"[A-Za-z0-9_$#]+")
_ORACLE_SERVICE = re.compile(r"[A-Za-z0-9_$#][A-Za-z0-9_.$#-]*")
_ORACLE_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_.$#-]*")


def oracle(rest: str) -> Pairs:
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
        raise credentials_error("user/password before '@'")
    target = after[at + 1 :].strip()
    if not target:
        raise ValueError(
            "the Oracle JDBC URL has nothing after '@'; "
            "expected host:port:SID, //host:port/service or (DESCRIPTION=...)"
        )
    if target.startswith("("):
        return [("DBQ", _oracle_descriptor(target))]
    if "?" in target:
        raise ValueError(f"connection properties after '?' in an Oracle JDBC URL are not translated; {FULL_CONTROL}")
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
            f"(DESCRIPTION=...), which may list several; or {FULL_CONTROL}"
        )
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            raise ValueError("the IPv6 address in the Oracle JDBC URL has no closing ']'")
        host_text, rest = text[: close + 1], text[close + 1 :]
    else:
        cut = min((i for i in (text.find(":"), text.find("/")) if i != -1), default=len(text))
        host_text, rest = text[:cut], text[cut:]
    host, is_ipv6 = parse_host(host_text, dialect)
    port = 1521
    if rest.startswith(":"):
        cut = min((i for i in (rest.find(":", 1), rest.find("/", 1)) if i != -1), default=len(rest))
        port_text, rest = rest[1:cut], rest[cut:]
        if not rest and not port_text.isdigit():
            raise ValueError(
                f"{port_text!r} in the Oracle JDBC URL is not a port; the SID form is "
                "jdbc:oracle:thin:@host:port:SID and the service form jdbc:oracle:thin:@//host:port/service"
            )
        port = parse_port(port_text, dialect)
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
            f"{FULL_CONTROL}"
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
            f"connection properties are not translated; {FULL_CONTROL}"
        )
    keyword = text[1:].lstrip().split("=", 1)[0].strip().upper()
    if keyword not in ("DESCRIPTION", "DESCRIPTION_LIST"):
        raise ValueError("an Oracle JDBC URL's '@(' must open a (DESCRIPTION=...) or (DESCRIPTION_LIST=...)")
    return text
