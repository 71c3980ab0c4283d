"""What a ServiceNow record looks like on the wire: string values, sys fields, display values.

Every value is a JSON string (SERVICENOW_API.md §1.4): booleans ``"true"``, numbers ``"3"``,
empty ``""``, datetimes UTC ``"YYYY-MM-DD HH:MM:SS"``, ``sys_id`` 32 lower-case hex digits.
In the sandbox a reference field is a plain string, and a display value is the value itself.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from bridgehead_sandbox.values import to_text

SYS_FIELDS = (
    "sys_id",
    "sys_created_on",
    "sys_created_by",
    "sys_updated_on",
    "sys_updated_by",
    "sys_mod_count",
    "sys_tags",
)
_SYS_ID = re.compile(r"^[0-9a-f]{32}$")
DisplayValue = Literal["false", "true", "all"]


def now_text(at: float | None = None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() if at is None else at))


def new_sys_id() -> str:
    return os.urandom(16).hex()


def is_sys_id(text: str) -> bool:
    return bool(_SYS_ID.match(text))


def to_value(value: object) -> str:
    """A JSON value as text. Only strings are documented for imports; other scalars get their
    usual text, a reference object its ``value``, and a nested value its JSON (an instance
    mangles it). The field's type then gives the stored form (values.store_value)."""
    return to_text(value)


def writable_fields(body: Mapping[str, Any]) -> dict[str, str]:
    """The fields a client may set: sys_* fields are system-generated (SERVICENOW_API.md §1.5)."""
    return {str(k): to_value(v) for k, v in body.items() if not str(k).startswith("sys_")}


def new_record(fields: Mapping[str, str], user: str, now: str, sys_id: str | None = None) -> dict[str, str]:
    return {
        **fields,
        "sys_id": sys_id or new_sys_id(),
        "sys_created_on": now,
        "sys_created_by": user,
        "sys_updated_on": now,
        "sys_updated_by": user,
        "sys_mod_count": "0",
        "sys_tags": "",
    }


def changed_fields(record: Mapping[str, str], fields: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if record.get(k, "") != v}


def touched(record: Mapping[str, str], changes: Mapping[str, str], user: str, now: str) -> dict[str, str]:
    """The record after an update that changed something (mod count and updated stamps move)."""
    out = dict(record)
    out.update(changes)
    out["sys_updated_on"] = now
    out["sys_updated_by"] = user
    out["sys_mod_count"] = str(int(record.get("sys_mod_count", "0") or "0") + 1)
    return out


def present(
    record: Mapping[str, str],
    columns: Iterable[str],
    fields: list[str] | None,
    display: DisplayValue,
) -> dict[str, Any]:
    """A record as the Table API answers it: every column of the table (a column a record
    lacks is empty, as on an instance), or only ``sysparm_fields``, unknown ones left out."""
    names: Iterable[str] = columns
    if fields is not None:
        known = set(columns)
        names = [f for f in fields if f in known]
    if display == "all":
        return {n: {"display_value": (v := record.get(n, "")), "value": v} for n in names}
    return {n: record.get(n, "") for n in names}


def parse_display(text: str | None) -> DisplayValue:
    value = (text or "").lower()
    if value == "true":
        return "true"
    if value == "all":
        return "all"
    return "false"


def parse_fields(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [f.strip() for f in text.split(",") if f.strip()]
