"""How deep a record may nest: ``MAX_RECORD_DEPTH`` levels of objects and arrays.

A record nested near the interpreter's recursion limit encodes on the agent yet fails to
decode on the control plane (whose decoder starts deeper in its call stack): the session
closes as malformed, the agent re-sends the same frame on reconnect, and the agent's jobs
stall forever behind it. So records are bounded well below any decoder's reach, and the
plugin that made one fails its job with ``bad_record`` (DESIGN invariant 7, bounded
everything). Real data is nowhere near the bound: REST APIs nest a dozen levels at most.

Checking must not cost the fast paths (a row of ``sql``, an entry of ``ldap``) anything that
shows: a record's depth is at most the number of ``{`` and ``[`` it holds, which ``bytes.count``
finds at memory speed; only a record with more of them than the bound is walked exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_RECORD_DEPTH = 128

_OPENERS = (b"{", b"[")
_STRUCTURE = re.compile(rb'[\[\]{}"\\]')


def opening_brackets(data: bytes) -> int:
    """``{`` and ``[`` in ``data``, inside strings too: an upper bound of its depth."""
    return data.count(_OPENERS[0]) + data.count(_OPENERS[1])


def depth(data: bytes) -> int:
    """The exact nesting depth of the JSON text ``data`` (brackets inside strings ignored)."""
    level = deepest = 0
    in_string = False
    escaped_at = -1  # the position a backslash in a string escapes
    for match in _STRUCTURE.finditer(data):
        char, at = match.group(), match.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == b"\\":
                escaped_at = at + 1
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char in _OPENERS:
            level += 1
            deepest = max(deepest, level)
        elif char in (b"}", b"]"):
            level -= 1
    return deepest


def too_deep(records: Iterable[bytes]) -> int | None:
    """The index of the first record nested deeper than ``MAX_RECORD_DEPTH``, or None."""
    for index, data in enumerate(records):
        if opening_brackets(data) > MAX_RECORD_DEPTH and depth(data) > MAX_RECORD_DEPTH:
            return index
    return None
