"""Encoded queries that find rows by their coalesce keys, each GET under a byte budget.

An instance, and the proxies in front of it, refuse a request line past a few KiB (often
8 KiB) with a 400; a ``fieldIN`` list of 100 long keys is many KiB once percent-encoded.
So the keys are cut into queries whose whole URL, as encoded here (every reserved byte as
``%XX``, an upper bound of what the HTTP client sends), stays under ``max_url_bytes``. A single
key too long for the budget by itself is looked up by a prefix (``STARTSWITH``) and the
answers filtered exactly: every key is looked up, none is refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from urllib.parse import quote

# Keys in one IN query, where the URL budget allows: a whole batch of the default size (200)
# is one lookup, not two (each lookup is a query over the table on the instance, and a round
# trip the batch waits for; bench/servicenow_sink.py). The answer is read with sysparm_limit
# at two rows per key, which stays under an instance's 10,000-row cap on a page.
MAX_KEYS_PER_QUERY = 1000
_MIN_PREFIX = 8  # characters of a prefix lookup; shorter would match too many rows


def url_bytes(base: str, params: dict[str, str]) -> int:
    """The URL's length with ``params`` percent-encoded byte by byte (UTF-8)."""
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
    return len(base) + 1 + len(query.encode())


def _escape(value: str) -> str:
    """A value in an encoded query: ``^`` would start a new term, so it is doubled."""
    return value.replace("^", "^^")


def in_queries(
    base: str, fixed: dict[str, str], field: str, keys: Sequence[str], budget: int
) -> Iterator[tuple[str, list[str]]]:
    """``(query, keys)`` pairs: ``fieldINk1,k2,...`` over every key whose URL fits ``budget``
    (with the ``fixed`` params). A key too long to fit even alone comes as its own
    ``one_query`` (a ``STARTSWITH`` prefix: the caller filters). Sizes are counted key by key
    (a comma is ``%2C``), so cutting a batch costs one pass over its keys."""
    empty = url_bytes(base, {**fixed, "sysparm_query": f"{field}IN"})
    batch: list[str] = []
    size = empty
    for key in keys:
        if "," in key:  # IN splits at commas: this key needs a term of its own
            yield one_query(base, fixed, [(field, key)], budget), [key]
            continue
        grows = len(quote(_escape(key), safe="").encode()) + (3 if batch else 0)
        if batch and len(batch) < MAX_KEYS_PER_QUERY and size + grows <= budget:
            batch.append(key)
            size += grows
            continue
        if batch:
            yield f"{field}IN{','.join(_escape(k) for k in batch)}", batch
            batch, size = [], empty
        alone = empty + len(quote(_escape(key), safe="").encode())
        if alone <= budget:
            batch, size = [key], alone
        else:
            yield one_query(base, fixed, [(field, key)], budget), [key]
    if batch:
        yield f"{field}IN{','.join(_escape(k) for k in batch)}", batch


def one_query(base: str, fixed: dict[str, str], terms: Sequence[tuple[str, str]], budget: int) -> str:
    """``f1=v1^f2=v2``; where that is over ``budget``, the longest values become
    ``STARTSWITH`` prefixes, shortened until it fits (the caller filters the answers)."""
    values = [v for _f, v in terms]
    prefix = [False] * len(values)

    def query() -> str:
        return "^".join(
            f"{f}{'STARTSWITH' if p else '='}{_escape(v)}" for (f, _), v, p in zip(terms, values, prefix, strict=True)
        )

    while url_bytes(base, {**fixed, "sysparm_query": query()}) > budget:
        longest = max(range(len(values)), key=lambda i: len(values[i]))
        if len(values[longest]) <= _MIN_PREFIX:
            break  # as short as a lookup can be: send it (the budget is far above this)
        values[longest] = values[longest][: max(_MIN_PREFIX, len(values[longest]) * 3 // 4)]
        prefix[longest] = True
    return query()
