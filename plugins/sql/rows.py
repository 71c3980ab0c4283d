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
what building a dict per row would. Only columns whose values need a change (instants that
need their UTC offset, floats that may be non-finite) pay for a Python call per value.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

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


def _as_utc(value: datetime.datetime | None) -> datetime.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    # The constructor is about twice as fast as value.replace(tzinfo=...).
    return datetime.datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond, _UTC
    )


def _finite_or_text(value: float | None) -> float | str | None:
    if value is None or value - value == 0.0:  # false for NaN and both infinities
        return value
    return "NaN" if value != value else _NON_FINITE[value]


Fix = Callable[[Any], Any]


class RowEncoder:
    """Encodes fetched rows of one result set into JSON object records."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = list(columns)
        names = unique_names([c.name for c in columns])
        fields = [f"c{i}" for i in range(len(names))]
        # Field names must be identifiers; ``rename`` puts the real column names on the wire.
        self._struct = msgspec.defstruct("Row", fields, rename=dict(zip(fields, names, strict=True)))
        self._encode = msgspec.json.Encoder().encode
        self._fixes: list[tuple[int, Fix]] = []
        for i, column in enumerate(columns):
            if column.utc and issubclass(column.python_type, datetime.datetime):
                self._fixes.append((i, _as_utc))
            elif issubclass(column.python_type, float):
                self._fixes.append((i, _finite_or_text))

    def encode(self, rows: Sequence[Any]) -> list[bytes]:
        """``rows`` are pyodbc ``Row`` objects (or tuples, or lists); each becomes one record."""
        struct, encode = self._struct, self._encode
        if self._fixes:
            fixed = []
            for row in rows:
                values = list(row)
                for i, fix in self._fixes:
                    values[i] = fix(values[i])
                fixed.append(values)
            rows = fixed
        return [encode(struct(*row)) for row in rows]
