"""Encoded queries that find rows by their coalesce keys, each GET under a byte budget.

An instance, and the proxies in front of it, refuse a request line past a few KiB (often
8 KiB) with a 400; a ``fieldIN`` list of 100 long keys is many KiB once percent-encoded.
So the keys are cut into queries whose whole URL, as encoded here (every reserved byte as
``%XX``, an upper bound of what the HTTP client sends), stays under ``max_url_bytes``. A single
key too long for the budget by itself is looked up by a prefix (``STARTSWITH``) and the
answers filtered exactly: every key is looked up, none is refused.

Keys are record data, so hostile: a ``^`` in one would end its term and start another of the
attacker's choosing (``x^ORsys_idISNOTEMPTY`` matches every row), and an encoded query has
no escape for it that an instance documents. So no ``^`` is ever sent: a key holding one is
looked up by the text before it (``STARTSWITH``) and matched exactly by the caller, and a key
that starts with ``^`` cannot be looked up at all (``one_query`` gives ``None``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple
from urllib.parse import quote

# Keys in one IN query, where the URL budget allows: a whole batch of the default size (200)
# is one lookup, not two (each lookup is a query over the table on the instance, and a round
# trip the batch waits for; bench/servicenow_sink.py). The answer is read with sysparm_limit
# at two rows per key, which stays under an instance's 10,000-row cap on a page.
MAX_KEYS_PER_QUERY = 1000
_MIN_PREFIX = 8  # characters of a prefix lookup; shorter would match too many rows
TERM_SEPARATOR = "^"


class Query(NamedTuple):
    """An encoded query; ``exact`` when it matches only its keys' rows (an IN list or
    ``=`` terms), otherwise the caller filters what it answers and reads every page."""

    text: str
    exact: bool


def url_bytes(base: str, params: dict[str, str]) -> int:
    """The URL's length with ``params`` percent-encoded byte by byte (UTF-8)."""
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
    return len(base) + 1 + len(query.encode())


def in_queries(
    base: str, fixed: dict[str, str], field: str, keys: Sequence[str], budget: int
) -> Iterator[tuple[Query | None, list[str]]]:
    """``(query, keys)`` pairs: ``fieldINk1,k2,...`` over every key whose URL fits ``budget``
    (with the ``fixed`` params). A key that cannot stand in an IN list (too long to fit even
    alone, or holding ``,`` or ``^``) comes as its own ``one_query`` (maybe a ``STARTSWITH``
    prefix: the caller filters; ``None``: no query can find it). Sizes are counted key by
    key (a comma is ``%2C``), so cutting a batch costs one pass over its keys."""
    empty = url_bytes(base, {**fixed, "sysparm_query": f"{field}IN"})
    batch: list[str] = []
    size = empty
    for key in keys:
        if "," in key or TERM_SEPARATOR in key:  # IN splits at commas; ^ must never be sent
            yield one_query(base, fixed, [(field, key)], budget), [key]
            continue
        grows = len(quote(key, safe="").encode()) + (3 if batch else 0)
        if batch and len(batch) < MAX_KEYS_PER_QUERY and size + grows <= budget:
            batch.append(key)
            size += grows
            continue
        if batch:
            yield Query(f"{field}IN{','.join(batch)}", exact=True), batch
            batch, size = [], empty
        alone = empty + len(quote(key, safe="").encode())
        if alone <= budget:
            batch, size = [key], alone
        else:
            yield one_query(base, fixed, [(field, key)], budget), [key]
    if batch:
        yield Query(f"{field}IN{','.join(batch)}", exact=True), batch


def one_query(base: str, fixed: dict[str, str], terms: Sequence[tuple[str, str]], budget: int) -> Query | None:
    """``f1=v1^f2=v2``; a value holding ``^`` becomes a ``STARTSWITH`` of the text before it
    (a value that starts with ``^`` drops its term), and where the query is over ``budget``
    the longest values become prefixes too, shortened until it fits (then not ``exact``);
    ``None`` when no term is left."""
    values: list[str] = []
    prefix: list[bool] = []
    fields: list[str] = []
    for field, value in terms:
        head, caret, _rest = value.partition(TERM_SEPARATOR)
        if caret and not head:
            continue  # nothing before the ^ to look up by: the other terms find the row
        fields.append(field)
        values.append(head)
        prefix.append(bool(caret))
    if not fields:
        return None

    def query() -> str:
        return TERM_SEPARATOR.join(
            f"{f}{'STARTSWITH' if p else '='}{v}" for f, v, p in zip(fields, values, prefix, strict=True)
        )

    while url_bytes(base, {**fixed, "sysparm_query": query()}) > budget:
        longest = max(range(len(values)), key=lambda i: len(values[i]))
        if len(values[longest]) <= _MIN_PREFIX:
            break  # as short as a lookup can be: send it (the budget is far above this)
        values[longest] = values[longest][: max(_MIN_PREFIX, len(values[longest]) * 3 // 4)]
        prefix[longest] = True
    return Query(query(), exact=len(fields) == len(terms) and not any(prefix))
