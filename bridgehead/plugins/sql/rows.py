"""Rows to records: each row becomes one JSON object keyed by column name.

The JSON form of each value (docs/plugins/sql.md has the table):

    NULL                          null
    boolean / bit                 true / false
    integers                      numbers (exact, any size)
    float / double                numbers; NaN and infinities as "NaN", "Infinity", "-Infinity"
    decimal / numeric             strings, exact ("12.50"), never a float
    date, time                    ISO 8601 strings ("2024-02-29", "12:00:01.5")
    timestamp                     ISO 8601 without offset ("2024-02-29T12:00:01")
    timestamp with time zone      ISO 8601 in UTC with "Z" ("2024-02-29T12:00:01Z")
    binary                        base64 strings
    uuid                          lowercase canonical strings
    anything else                 the driver's text (json, interval, arrays, ...)

msgspec produces most of these forms itself, in C: a row is turned into an instance of a
struct made for the query's columns and encoded in one call, which costs about a quarter of
what building a dict per row would. Columns whose values need a change (instants that need
their UTC offset, floats that may be non-finite) are fixed a column at a time with C-level
``map`` calls, without a Python frame per value.
"""

from __future__ import annotations

import datetime
import decimal
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat, starmap
from typing import Any

import msgspec

from bridgehead.sdk import RecordArray

_UTC = datetime.UTC
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


@dataclass(frozen=True)
class Column:
    name: str
    python_type: type
    # The database's own type name (``timestamptz``, ``datetime``), or "" where unknown.
    type_name: str
    # The values are instants in UTC (the session's time zone is set to UTC on connect).
    utc: bool = False


def unique_names(names: Sequence[str]) -> list[str]:
    """Column names made unique: ``select 1, 1`` must not give an object with one key twice."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate)
        out.append(candidate)
    return out


_combine = datetime.datetime.combine
_time_of = datetime.datetime.time


def _utc_column(values: tuple[Any, ...]) -> Iterable[Any]:
    """Naive datetimes that are UTC instants, made aware (so they encode with "Z")."""
    if None in values:
        return [None if v is None else _combine(v, _time_of(v), _UTC) for v in values]
    # map() over C functions with no Python frame per value: a third of the loop's cost.
    return map(_combine, values, map(_time_of, values), repeat(_UTC))


def _finite_column(values: tuple[Any, ...]) -> Iterable[Any]:
    """Floats, with NaN and the infinities as strings (JSON has no such numbers)."""
    try:
        # One C-level pass: the sum of finite floats is finite (or overflows, checked below).
        if math.isfinite(math.fsum(filter(None, values))):
            return values
    except (OverflowError, ValueError):  # finite values that overflow; inf + -inf
        pass
    return [_finite_or_text(v) for v in values]


def _decimal_column(values: tuple[Any, ...]) -> Iterable[Any]:
    """Decimals as plain digits ("0.0000001000"), never exponent form ("1.000E-7")."""
    return [None if v is None else format(v, "f") for v in values]


def _finite_or_text(value: float | None) -> float | str | None:
    if value is None or value - value == 0.0:  # false for NaN and both infinities
        return value
    return "NaN" if value != value else _NON_FINITE[value]


Fix = Callable[[tuple[Any, ...]], Iterable[Any]]


class RowEncoder:
    """Encodes fetched rows of one result set into JSON object records."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = list(columns)
        names = unique_names([c.name for c in columns])
        fields = [f"c{i}" for i in range(len(names))]
        # Field names must be identifiers; ``rename`` puts the real column names on the wire.
        # No cycle can run through a row of plain values: untracked by the GC, a thousand rows
        # a batch do not set off collections.
        self._struct = msgspec.defstruct("Row", fields, rename=dict(zip(fields, names, strict=True)), gc=False)
        self._encode = msgspec.json.Encoder().encode
        self._fixes: list[tuple[int, Fix]] = []
        # Decimals are left to msgspec (its form is ``str()``), unless that form turns out
        # to be exponent notation: see ``encode_array``.
        self._decimal_fixes: list[tuple[int, Fix]] = []
        for i, column in enumerate(columns):
            if column.utc and issubclass(column.python_type, datetime.datetime):
                self._fixes.append((i, _utc_column))
            elif issubclass(column.python_type, decimal.Decimal):
                self._decimal_fixes.append((i, _decimal_column))
            elif issubclass(column.python_type, float):
                self._fixes.append((i, _finite_column))

    def encode(self, rows: Sequence[Any]) -> list[bytes]:
        """``rows`` are pyodbc ``Row`` objects (or tuples, or lists); each becomes one record."""
        return list(map(self._encode, self._structs(rows, self._fixes + self._decimal_fixes)))

    def encode_array(self, rows: Sequence[Any]) -> RecordArray:
        """``encode``, as one JSON array made in one call: a quarter cheaper per row, and one
        object for the agent's stream to carry instead of one per row."""
        array = RecordArray.of_structs(self._structs(rows, self._fixes))
        body = array.body
        if self._decimal_fixes and b"E" in body and (b"E+" in body or b"E-" in body):
            # ``str()`` gives plain digits ("12.50", as "f" does) except where it writes an
            # exponent, always with its sign. Some decimal may have had one (or a text value
            # merely contains "E-"): encode again with the exact form. A scan for one byte
            # (memchr, a hundredth of the cost of a row) before the slower ones for two.
            array = RecordArray.of_structs(self._structs(rows, self._fixes + self._decimal_fixes))
        return array

    def _structs(self, rows: Sequence[Any], fixes: list[tuple[int, Fix]]) -> list[Any]:
        struct = self._struct
        if not fixes or not rows:
            return list(starmap(struct, rows))
        # Column by column: a fix runs over a whole column in one call; then ``map`` builds
        # the structs straight from the columns (no tuple per row in between).
        columns: list[Iterable[Any]] = list(zip(*rows, strict=True))
        for i, fix in fixes:
            columns[i] = fix(columns[i])  # type: ignore[arg-type]
        return list(map(struct, *columns))
