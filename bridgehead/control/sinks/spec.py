"""A job's ``sink``: where its records go, and how each record becomes a ServiceNow row.

    {"servicenow": "corp", "import_set": "u_ldap_user_import", "map": {"u_email": "mail"}}
    {"servicenow": "corp", "table": "cmdb_ci_linux_server", "coalesce": ["name"], "map": {...}}
    {"servicenow": "corp", "preset": "ldap_users"}        (sinks/presets.py)

``map`` is target field <- record key. Keys the map does not name pass through as
``u_<key>`` (a custom column's name on an import set table) unless ``"passthrough": false``.
The Import Set API takes string values only, so every value is sent as text: null as "",
booleans as "true"/"false", numbers as written, lists and objects as compact JSON.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

NAME = r"^[a-z][a-z0-9_]{0,79}$"
Field = Annotated[str, msgspec.Meta(pattern=NAME)]
RecordKey = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_PASSTHROUGH_KEY = re.compile(r"[^a-z0-9_]+")


class SinkSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    servicenow: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    import_set: Field | None = None
    table: Field | None = None
    coalesce: Annotated[list[Field], msgspec.Meta(max_length=8)] = []
    map: Annotated[dict[Field, RecordKey], msgspec.Meta(max_length=500)] = {}
    passthrough: bool = True
    preset: Literal["ldap_users", "ldap_groups"] | None = None
    # A record {"op": "delete", ...} (an ldap sync's deletion), on a table sink: "deactivate"
    # sets active = false on the matching row, "delete" deletes it, "ignore" skips it.
    on_delete: Literal["ignore", "deactivate", "delete"] = "ignore"

    def __post_init__(self) -> None:
        if self.preset is not None:
            if self.import_set or self.table or self.coalesce or self.map:
                raise ValueError("a preset decides table, coalesce and map: give none of them with it")
            return
        if (self.import_set is None) == (self.table is None):
            raise ValueError("give exactly one of import_set and table (or a preset)")
        if self.table is not None and not self.coalesce:
            raise ValueError(
                "a table sink needs coalesce (the fields that find an existing row): without it a "
                "re-sent record would be inserted twice"
            )
        if self.import_set is not None and self.coalesce:
            raise ValueError("an import set's coalesce fields are its transform map's, on the instance")
        mapped = set(self.map)
        if self.table is not None:
            missing = [f for f in self.coalesce if f not in mapped and not self.passthrough]
            if missing:
                raise ValueError(f"coalesce field(s) {', '.join(missing)} are not in map")


def parse_sink(value: Mapping[str, Any]) -> SinkSpec:
    """``ValueError`` with the reason when ``value`` is not a sink."""
    try:
        return msgspec.convert(value, SinkSpec, strict=True)
    except msgspec.ValidationError as exc:
        raise ValueError(str(exc)) from None


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return msgspec.json.encode(value).decode()


def passthrough_name(key: str) -> str:
    """``mail`` -> ``u_mail``; ``userPrincipalName`` -> ``u_userprincipalname``."""
    return "u_" + _PASSTHROUGH_KEY.sub("_", key.lower()).strip("_")[:78]


def to_row(spec: SinkSpec, record: Mapping[str, Any]) -> dict[str, str]:
    """One record as a row of text values, by ``spec.map`` and passthrough."""
    row = {target: as_text(record.get(key)) for target, key in spec.map.items()}
    if spec.passthrough:
        taken = set(spec.map.values())
        for key, value in record.items():
            if key not in taken and key != "op":
                row.setdefault(passthrough_name(key), as_text(value))
    return row
