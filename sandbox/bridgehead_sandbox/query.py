"""ServiceNow encoded queries (``sysparm_query``), for the sandbox stand-in: parse, match, sort.

Sans-I/O: text in, a :class:`Query` out, then plain calls on records (``dict[str, str]``).
The grammar is SERVICENOW_API.md §2::

    query     := term ( "^" term )*
    term      := condition | "OR" condition | "NQ" condition | "ORDERBY" field
               | "ORDERBYDESC" field | "EQ"
    condition := field OPERATOR value          (no spaces, except inside "NOT LIKE", "NOT IN")

``^OR`` binds tighter than ``^`` (``a^b^ORc`` is ``a AND (b OR c)``) and ``^NQ`` starts a new
top-level group OR'ed with the others. A term the sandbox cannot understand (unknown field,
unsupported operator such as ``DYNAMIC`` or a ``javascript:`` value) is *dropped* and the rest
still runs, as on an instance; :attr:`Query.invalid` lists what was dropped so that strict mode
(``glide.invalid_query.returns_no_rows``) can answer no rows instead.

Where the field ends and the operator starts: when the table's columns are known (the Table
API always passes them) the longest column the term starts with wins, and any other field is
unknown. Without columns, the field is the shortest run of ``[A-Za-z0-9_.]`` followed by a
supported operator; ServiceNow field names are lower case, so this is exact for them.

Case: an instance's database compares strings ignoring case (its default collation), so ``=``,
``!=``, ``IN`` and ``NOT IN`` match ``Alice`` for ``alice`` (as LIKE and STARTSWITH always
did); ``case_sensitive=True`` makes those four exact (the sandbox's ``instance.case_sensitive``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TypeVar

Record = Mapping[str, str]
Predicate = Callable[[Record], bool]
R = TypeVar("R", bound=Mapping[str, str])

# Canonical name of each supported operator spelling, longest first so that "NOT LIKE" wins
# over "NOT IN"'s prefix, "ISNOTEMPTY" over "ISEMPTY", "!=" over "!*" and so on.
_SUPPORTED: dict[str, str] = {
    "NOT LIKE": "NOT LIKE",
    "NOT IN": "NOT IN",
    "STARTSWITH": "STARTSWITH",
    "ENDSWITH": "ENDSWITH",
    "ISNOTEMPTY": "ISNOTEMPTY",
    "ISEMPTY": "ISEMPTY",
    "EMPTYSTRING": "EMPTYSTRING",
    "ANYTHING": "ANYTHING",
    "BETWEEN": "BETWEEN",
    "NSAMEAS": "NSAMEAS",
    "SAMEAS": "SAMEAS",
    "LIKE": "LIKE",
    "IN": "IN",
    "!=": "!=",
    "<=": "<=",
    ">=": ">=",
    "!*": "NOT LIKE",
    "=": "=",
    "<": "<",
    ">": ">",
    "*": "LIKE",
    "%": "ENDSWITH",
}
# Operators an instance has and the sandbox does not (dates, hierarchy, dynamic filters,
# field-to-field comparisons). Known here so that ``IN_HIERARCHY`` is not read as ``IN``.
_UNSUPPORTED = (
    "IN_HIERARCHY",
    "DYNAMIC",
    "NOTON",
    "ON",
    "RELATIVEGT",
    "RELATIVELT",
    "RELATIVEGE",
    "RELATIVELE",
    "RELATIVEEE",
    "DATEPART",
    "MORETHAN",
    "LESSTHAN",
    "VALCHANGES",
    "CHANGESFROM",
    "CHANGESTO",
    "GT_FIELD",
    "LT_FIELD",
    "GT_OR_EQUALS_FIELD",
    "LT_OR_EQUALS_FIELD",
    "INSTANCEOF",
)
_ALL_OPERATORS = sorted([*_SUPPORTED, *_UNSUPPORTED], key=len, reverse=True)
_NO_VALUE = {"ISEMPTY", "ISNOTEMPTY", "EMPTYSTRING", "ANYTHING"}
_FIELD_CHAR = re.compile(r"[A-Za-z0-9_.]")


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    field: str
    op: str  # canonical: a key of the values of _SUPPORTED
    value: str


@dataclasses.dataclass(frozen=True, slots=True)
class OrderBy:
    field: str
    descending: bool = False


Clause = tuple[Condition, ...]  # OR'ed conditions
Group = tuple[Clause, ...]  # AND'ed clauses


@dataclasses.dataclass(frozen=True)
class Query:
    """A parsed encoded query: ``groups`` are OR'ed (``^NQ``); no groups matches everything."""

    groups: tuple[Group, ...] = ()
    order: tuple[OrderBy, ...] = ()
    invalid: tuple[str, ...] = ()
    case_sensitive: bool = False

    def predicate(self) -> Predicate:
        """A function that tells whether a record matches (built once, called per record)."""
        exact = self.case_sensitive
        groups = [[[_compile(c, exact) for c in clause] for clause in group] for group in self.groups]
        if not groups:
            return _always

        def matches(record: Record) -> bool:
            return any(all(any(test(record) for test in clause) for clause in group) for group in groups)

        return matches

    def matches(self, record: Record) -> bool:
        return self.predicate()(record)

    def equality_on(self) -> Condition | None:
        """An ``=`` condition every match must satisfy, if there is one (lets a store use an
        index for the candidates and test only those)."""
        if len(self.groups) != 1:
            return None
        for clause in self.groups[0]:
            if len(clause) == 1 and clause[0].op == "=":
                return clause[0]
        return None


def _always(record: Record) -> bool:
    return True


class _Builder:
    def __init__(self) -> None:
        self.groups: list[list[list[Condition]]] = [[]]
        self.order: list[OrderBy] = []
        self.invalid: list[str] = []

    def add(self, condition: Condition, *, or_previous: bool) -> None:
        group = self.groups[-1]
        if or_previous and group:
            group[-1].append(condition)
        else:
            group.append([condition])

    def build(self, case_sensitive: bool) -> Query:
        groups = tuple(tuple(tuple(clause) for clause in group) for group in self.groups if group)
        return Query(groups, tuple(self.order), tuple(self.invalid), case_sensitive)


def parse(text: str, columns: Collection[str] | None = None, *, case_sensitive: bool = False) -> Query:
    """Parse an encoded query; ``columns`` are the table's fields (others are unknown).
    ``case_sensitive``: ``=``, ``!=``, ``IN``, ``NOT IN`` compare exactly (not as an instance)."""
    by_length = sorted(columns, key=len, reverse=True) if columns is not None else None
    out = _Builder()
    terms = text.split("^")
    skipping_related = False
    for index, term in enumerate(terms):
        if skipping_related:  # ^RLQUERY...^ENDRLQUERY: a related-list query, not emulated
            skipping_related = term != "ENDRLQUERY"
            continue
        if not term or term == "EQ":
            continue
        if term.startswith("ORDERBYDESC") or term.startswith("ORDERBY"):
            descending = term.startswith("ORDERBYDESC")
            field = term[len("ORDERBYDESC") :] if descending else term[len("ORDERBY") :]
            if field and (columns is None or field in columns):
                out.order.append(OrderBy(field, descending))
            else:
                out.invalid.append(term)
            continue
        if term.startswith("RLQUERY"):
            out.invalid.append(term)
            skipping_related = True
            continue
        if term.startswith("GROUPBY") or term.startswith("123TEXTQUERY321"):
            out.invalid.append(term)
            continue
        # A known column wins over the OR / NQ prefixes: a staging column may be called "ORG".
        condition = _condition(term, by_length, columns) if by_length is not None else None
        or_previous = False
        if condition is None and index > 0 and term.startswith("NQ"):
            out.groups.append([])
            term = term[2:]
        elif condition is None and index > 0 and term.startswith("OR"):
            or_previous = True
            term = term[2:]
        if condition is None:
            condition = _condition(term, by_length, columns)
        if condition is None:
            out.invalid.append(term)
        else:
            out.add(condition, or_previous=or_previous)
    return out.build(case_sensitive)


def _condition(term: str, by_length: Sequence[str] | None, columns: Collection[str] | None) -> Condition | None:
    if by_length is not None:
        for column in by_length:
            if column and term.startswith(column):
                op = _operator_at(term, len(column))
                if op is not None:
                    return _make(column, op, term[len(column) + len(op) :], columns)
        return None
    for end in range(1, len(term)):
        if not _FIELD_CHAR.match(term[end - 1]):
            return None
        op = _operator_at(term, end)
        if op is not None and op in _SUPPORTED:
            return _make(term[:end], op, term[end + len(op) :], columns)
    return None


def _operator_at(term: str, position: int) -> str | None:
    for op in _ALL_OPERATORS:
        if term.startswith(op, position):
            return op
    return None


def _make(field: str, spelling: str, value: str, columns: Collection[str] | None) -> Condition | None:
    op = _SUPPORTED.get(spelling)
    if op is None or value.startswith("javascript:"):
        return None
    if op in _NO_VALUE:
        value = ""
    elif op == "BETWEEN" and value.count("@") != 1:
        return None
    elif op in ("SAMEAS", "NSAMEAS") and (not value or (columns is not None and value not in columns)):
        return None
    return Condition(field, op, value)


# --- matching --------------------------------------------------------------------------


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _compare(left: str, right: str) -> int:
    """-1, 0 or 1; numbers compare as numbers, anything else as text (dates included, since
    ServiceNow writes them ``YYYY-MM-DD HH:MM:SS``)."""
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    return (left > right) - (left < right)


def _compile(c: Condition, exact: bool = False) -> Predicate:
    field, value = c.field, c.value
    folded = value.casefold()
    if c.op in ("=", "!=", "IN", "NOT IN") and not exact:
        return _compile_folded(c)
    if c.op == "=":
        return lambda r: r.get(field, "") == value
    if c.op == "!=":
        return lambda r: r.get(field, "") != value
    if c.op == "LIKE":
        return lambda r: folded in r.get(field, "").casefold()
    if c.op == "NOT LIKE":
        return lambda r: folded not in r.get(field, "").casefold()
    if c.op == "STARTSWITH":
        return lambda r: r.get(field, "").casefold().startswith(folded)
    if c.op == "ENDSWITH":
        return lambda r: r.get(field, "").casefold().endswith(folded)
    if c.op in ("IN", "NOT IN"):
        members = frozenset(value.split(","))
        if c.op == "IN":
            return lambda r: r.get(field, "") in members
        return lambda r: r.get(field, "") not in members
    if c.op in ("ISEMPTY", "EMPTYSTRING"):
        return lambda r: r.get(field, "") == ""
    if c.op == "ISNOTEMPTY":
        return lambda r: r.get(field, "") != ""
    if c.op == "ANYTHING":
        return _always
    if c.op == "SAMEAS":
        return lambda r: r.get(field, "") == r.get(value, "")
    if c.op == "NSAMEAS":
        return lambda r: r.get(field, "") != r.get(value, "")
    if c.op == "BETWEEN":
        low, high = value.split("@")

        def between(r: Record) -> bool:
            v = r.get(field, "")
            return v != "" and _compare(v, low) >= 0 and _compare(v, high) <= 0

        return between
    # An empty value is NULL on an instance, and NULL compares false with anything.
    wanted = {"<": (-1,), "<=": (-1, 0), ">": (1,), ">=": (1, 0)}[c.op]
    return lambda r: (v := r.get(field, "")) != "" and _compare(v, value) in wanted


def _compile_folded(c: Condition) -> Predicate:
    """``=``, ``!=``, ``IN``, ``NOT IN`` ignoring case, as an instance's collation compares."""
    field, folded = c.field, c.value.casefold()
    if c.op == "=":
        return lambda r: r.get(field, "").casefold() == folded
    if c.op == "!=":
        return lambda r: r.get(field, "").casefold() != folded
    members = frozenset(folded.split(","))
    if c.op == "IN":
        return lambda r: r.get(field, "").casefold() in members
    return lambda r: r.get(field, "").casefold() not in members


# --- ordering --------------------------------------------------------------------------


def order_records(records: Sequence[R], order: Sequence[OrderBy]) -> list[R]:
    """Sort by each ORDERBY in turn (the first is the primary key); stable, so records equal
    on every key keep the store's order. A column whose values are all numbers sorts as
    numbers; empty values sort first, as NULLs do ascending."""
    out = list(records)
    for key in reversed(order):
        values = [r.get(key.field, "") for r in out]
        numeric = all(_number(v) is not None for v in values if v != "")
        out.sort(key=_numeric_key(key.field) if numeric else _text_key(key.field), reverse=key.descending)
    return out


def _numeric_key(field: str) -> Callable[[Record], tuple[bool, float]]:
    def key(r: Record) -> tuple[bool, float]:
        v = r.get(field, "")
        return (v != "", float(v) if v != "" else 0.0)

    return key


def _text_key(field: str) -> Callable[[Record], tuple[bool, str]]:
    def key(r: Record) -> tuple[bool, str]:
        v = r.get(field, "")
        return (v != "", v)

    return key
