"""Reading and writing ODBC connection strings (``KEY=value;KEY=value``), without pyodbc.

A value that holds ``;``, ``{``, ``}`` or ``=``, or starts or ends with whitespace, is
wrapped in braces with each ``}`` doubled: that is the one quoting rule the driver managers
(unixODBC, Windows) and the drivers this plugin targets agree on. Profiles hold connection
strings and this module writes them from JDBC URLs, so both directions live here and are
tested against each other.

Error messages never repeat a value, only keys and positions: values may be passwords, and
the messages end up in logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Keys are plain words: a key with ; = { } could not be read back, and no driver has one.
_KEY = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_ ]*[A-Za-z0-9_])?")
_NEEDS_BRACES = frozenset(";{}=")


def quote(value: str) -> str:
    """``value`` as it may stand after ``KEY=``: unchanged when safe, else braced."""
    if "\x00" in value:
        raise ValueError("a connection string value may not contain a NUL character")
    if value != value.strip() or any(c in _NEEDS_BRACES for c in value):
        return _brace(value)
    return value


def _brace(value: str) -> str:
    return "{" + value.replace("}", "}}") + "}"


def build(pairs: Iterable[tuple[str, str]]) -> str:
    """``KEY=value;KEY=value`` from ``(key, value)`` pairs, values quoted as needed."""
    parts: list[str] = []
    for key, value in pairs:
        if not _KEY.fullmatch(key):
            raise ValueError(
                f"connection string key {key!r} must be letters, digits, underscores and inner spaces "
                "(no ; = { } and no leading or trailing space)"
            )
        if key.lower() == "driver":
            # Driver names are braced by convention (``Driver={ODBC Driver 18 for SQL Server}``);
            # some driver managers read an unbraced name with spaces badly.
            quote(value)  # the NUL check
            parts.append(f"{key}={_brace(value)}")
        else:
            parts.append(f"{key}={quote(value)}")
    return ";".join(parts)


def parse(text: str) -> list[tuple[str, str]]:
    """The ``(key, value)`` pairs of a connection string, in order, braces undone.

    Keys keep their case but lose surrounding whitespace; unbraced values are stripped too,
    as drivers do. Empty parts (``;;``, a trailing ``;``) are skipped.
    """
    pairs: list[tuple[str, str]] = []
    pos = 0
    end = len(text)
    number = 0  # 1-based number of the part, for messages
    while pos < end:
        number += 1
        semi = text.find(";", pos)
        equals = text.find("=", pos)
        part_end = end if semi == -1 else semi
        if equals == -1 or equals > part_end:
            if text[pos:part_end].strip():
                raise ValueError(f"part {number} of the connection string (at character {pos + 1}) has no '='")
            pos = part_end + 1
            continue
        key = text[pos:equals].strip()
        if not key:
            raise ValueError(f"part {number} of the connection string (at character {pos + 1}) has no key before '='")
        start = equals + 1
        while start < end and text[start] in " \t":
            start += 1
        if start < end and text[start] == "{":
            value, pos = _read_braced(text, start, key)
        else:
            value = text[start:part_end].strip()
            pos = part_end + 1
        pairs.append((key, value))
    return pairs


def _read_braced(text: str, start: int, key: str) -> tuple[str, int]:
    """Read the braced value opening at ``start``; return it and the position after its ``;``."""
    chars: list[str] = []
    i = start + 1
    end = len(text)
    while True:
        close = text.find("}", i)
        if close == -1:
            raise ValueError(
                f"the value of {key!r} opens a brace at character {start + 1} that is never closed "
                "(a '}' inside a braced value is written '}}')"
            )
        chars.append(text[i:close])
        if close + 1 < end and text[close + 1] == "}":
            chars.append("}")
            i = close + 2
            continue
        break
    after = close + 1
    while after < end and text[after] in " \t":
        after += 1
    if after < end and text[after] != ";":
        raise ValueError(
            f"the braced value of {key!r} is followed by more text at character {after + 1}; "
            "expected ';' or the end (a '}' inside a braced value is written '}}')"
        )
    return "".join(chars), after + 1


def get(pairs: Iterable[tuple[str, str]], key: str) -> str | None:
    """The value of the last ``key`` in ``pairs`` (case-insensitive, as drivers read keys), or None."""
    wanted = key.strip().lower()
    found: str | None = None
    for k, v in pairs:
        if k.strip().lower() == wanted:
            found = v
    return found
