"""What every dialect's translation shares: the refusal of credentials and of properties not
understood, and the parsing of hosts, ports and booleans as the JDBC drivers write them."""

from __future__ import annotations

import re

Pairs = list[tuple[str, str]]  # ODBC connection-string keys and values, in order
Props = dict[str, tuple[str, str]]  # lowercase name -> (name as written, value)

FULL_CONTROL = "write the profile's connection_string instead of jdbc_url for full control"

_CREDENTIAL_KEYS = frozenset({"user", "username", "password", "pwd", "uid", "password1", "password2", "password3"})

# Host names (letters, digits, . _ -; no leading dot or dash) and IPv4 addresses.
_HOST = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[A-Za-z0-9_.-]+)?")


def credentials_error(where: str) -> ValueError:
    return ValueError(
        f"the JDBC URL holds credentials ({where}); remove them and put the user name and password in "
        "a [credentials.NAME] table named by the profile's credential key, so that they stay out of the "
        "config file and the logs"
    )


def _unknown(dialect: str, key: str, translated: str) -> ValueError:
    return ValueError(
        f"property {key!r} of the {dialect} JDBC URL has no ODBC translation (translated: {translated}; "
        f"properties that only tune the Java driver are ignored, see docs/plugins/sql-jdbc.md); {FULL_CONTROL}"
    )


def check_props(props: Props, dialect: str, translated: frozenset[str], ignored: frozenset[str]) -> None:
    """Refuse credentials first (whatever else is wrong), then properties not understood."""
    for lowered, (key, _value) in props.items():
        if lowered in _CREDENTIAL_KEYS:
            raise credentials_error(f"the {key!r} property")
    for lowered, (key, _value) in props.items():
        if lowered not in translated and lowered not in ignored:
            raise _unknown(dialect, key, ", ".join(sorted(translated)))


def parse_bool(dialect: str, key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise ValueError(f"property {key!r} of the {dialect} JDBC URL must be true or false, not {value!r}")


def parse_port(text: str, dialect: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(f"the port {text!r} in the {dialect} JDBC URL is not a number from 1 to 65535")
    return int(text)


def parse_host(text: str, dialect: str) -> tuple[str, bool]:
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


def parse_host_port(authority: str, default_port: int, dialect: str) -> tuple[str, int, bool]:
    """``host[:port]`` or ``[ipv6][:port]`` -> (host, port, is_ipv6)."""
    if not authority:
        raise ValueError(f"the {dialect} JDBC URL has no host after '//'")
    if "," in authority:
        raise ValueError(
            f"the {dialect} JDBC URL names several hosts; only one host is translated (the ODBC driver "
            f"connects to one server); name one, or {FULL_CONTROL}"
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
    host, is_ipv6 = parse_host(host_text, dialect)
    port = default_port if port_text is None else parse_port(port_text, dialect)
    return host, port, is_ipv6
