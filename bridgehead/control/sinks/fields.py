"""``TargetFields``: a target table's fields as the instance reports them (``instance_schema``),
applied to the rows a sink sends, so that the sink compares as the instance does.

- Fields the table lacks are dropped before sending and before comparing (an instance drops
  them silently; sent anyway, they would count as a change on every run), each logged once.
- Values compare in the instance's forms (``normalise``: dates, numbers, booleans,
  truncation at max_length), so a value the instance stored differently is not a change.
- Coalesce keys compare case-insensitively, as the instance matches them.

When the instance describes no schema (``UNKNOWN``: a stand-in that makes fields on first
write), every field is kept and values compare as text, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bridgehead.control.sinks.instance_schema import FieldInfo, TableSchema, normalise, plain

log = logging.getLogger("bridgehead.control.sinks")

_MAX_DROPPED_NAMED = 20  # fields named in one log line


class InvalidTarget(Exception):
    """The target cannot take this delivery as configured (a table or a coalesce field it lacks)."""


class TargetFields:
    def __init__(self, instance: str, table: str, schema: TableSchema | None, coalesce: Sequence[str] = ()) -> None:
        self.instance = instance
        self.table = table
        self.schema = schema  # None: unknown (keep everything)
        self.coalesce = tuple(coalesce)
        self.dropped: dict[str, int] = {}  # field the target lacks -> rows it was dropped from

    def check(self, fields: Iterable[str]) -> list[str]:
        """The ``fields`` the target lacks (none when its schema is unknown)."""
        if self.schema is None:
            return []
        return [f for f in fields if self.schema.field(f) is None]

    def require(self, fields: Iterable[str], why: str) -> None:
        """``InvalidTarget`` naming the table and field(s) when any of ``fields`` is missing."""
        missing = self.check(fields)
        if missing:
            raise InvalidTarget(
                f"servicenow {self.instance}: table {self.table} has no field {', '.join(missing)} ({why}); "
                f"nothing was sent. Add the field on the instance (sys_dictionary), or change the sink"
            )

    def info(self, name: str) -> FieldInfo | None:
        return self.schema.field(name) if self.schema is not None else None

    def keep(self, fields: Mapping[str, str]) -> dict[str, str]:
        """``fields`` without those the target lacks (counted, and logged the first time)."""
        if self.schema is None:
            return dict(fields)
        kept: dict[str, str] = {}
        for name, value in fields.items():
            if self.schema.field(name) is not None:
                kept[name] = value
                continue
            if name not in self.dropped:
                self.dropped[name] = 0
                if len(self.dropped) <= _MAX_DROPPED_NAMED:
                    log.warning(
                        "servicenow %s: table %s has no field %s; it is not sent (an instance drops it)",
                        self.instance,
                        self.table,
                        name,
                    )
            self.dropped[name] += 1
        return kept

    def value(self, name: str, value: str) -> str:
        """``value`` in the form the instance stores in field ``name``."""
        info = self.info(name)
        return normalise(info, value) if info is not None else value

    def key_part(self, name: str, value: str) -> str:
        """A coalesce value as the instance stores it (the lookup sends this)."""
        return self.value(name, value)

    def key(self, fields: Mapping[str, str]) -> tuple[str, ...]:
        """The row's coalesce key as the instance compares it: stored form, case folded."""
        return tuple(self.value(f, fields.get(f, "")).casefold() for f in self.coalesce)

    def record_key(self, record: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(self.value(f, plain(record.get(f))).casefold() for f in self.coalesce)

    def changes(self, fields: Mapping[str, str], current: Mapping[str, Any]) -> dict[str, str]:
        """The fields of ``fields`` whose value differs from ``current``'s, as the instance
        would store them; a coalesce field differing only in case is no change."""
        changed: dict[str, str] = {}
        for name, value in fields.items():
            ours, theirs = self.value(name, value), self.value(name, plain(current.get(name)))
            if name in self.coalesce:
                ours, theirs = ours.casefold(), theirs.casefold()
            if ours != theirs:
                changed[name] = value
        return changed
