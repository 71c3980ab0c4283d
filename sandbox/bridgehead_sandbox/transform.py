"""Transform maps: how one staging row becomes an insert, an update, or neither.

A map (``[transforms.<staging_table>]`` in the config) names a target table, field maps
(target field = source field) and coalesce fields (target fields whose values find the record
to update). One row's outcome, in the order these are decided:

    error     a ``required`` source field is empty, or the row matches ``reject_if``
    skipped   every coalesce value is empty (and ``create_on_empty_coalesce`` is off)
    ignored   the row matches ``ignore_if``; or ``update_only`` and nothing matched;
              or the matched record already holds these values ("No field values changed")
    updated   a record matched on the coalesce fields and some value differs
    inserted  nothing matched

These are ServiceNow's row states (SERVICENOW_API.md §3.4; "ignored" for an unchanged record
and "skipped" for missing coalesce values as ServiceNow staff describe them). Scripts are not
emulated: ``reject_if``/``ignore_if``/``update_only`` stand in for the usual onBefore scripts.
"""

from __future__ import annotations

import dataclasses

from bridgehead_sandbox import query
from bridgehead_sandbox.config import TransformSection
from bridgehead_sandbox.records import changed_fields, is_sys_id, new_record, touched
from bridgehead_sandbox.store import Record, Table, Writer
from bridgehead_sandbox.values import store_value


@dataclasses.dataclass(frozen=True)
class TransformMap:
    staging: str
    name: str
    target: str
    fields: tuple[tuple[str, str], ...]  # (target field, source field)
    auto_map: bool
    coalesce: tuple[str, ...]
    display_field: str
    required: tuple[str, ...]
    reject: query.Predicate | None
    reject_message: str
    ignore: query.Predicate | None
    update_only: bool
    copy_empty_fields: bool
    create_on_empty_coalesce: bool
    maps_sys_fields: bool
    # Every staging column the map reads (field maps, required, reject_if, ignore_if): the
    # columns of a staging table that has no definition of its own.
    source_fields: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, staging: str, section: TransformSection) -> TransformMap:
        name = section.name or f"{staging} to {section.target}"
        reject_message = section.reject_message or f"Row rejected by transform map {name}: matches {section.reject_if}"
        return cls(
            staging=staging,
            name=name,
            target=section.target,
            fields=tuple(section.fields.items()),
            auto_map=section.auto_map,
            coalesce=tuple(section.coalesce),
            display_field=section.display_field,
            required=tuple(section.required),
            reject=query.parse(section.reject_if).predicate() if section.reject_if else None,
            reject_message=reject_message,
            ignore=query.parse(section.ignore_if).predicate() if section.ignore_if else None,
            update_only=section.update_only,
            copy_empty_fields=section.copy_empty_fields,
            create_on_empty_coalesce=section.create_on_empty_coalesce,
            maps_sys_fields=any(f.startswith("sys_") for f in section.fields),
            source_fields=_source_fields(section),
        )


def _source_fields(section: TransformSection) -> tuple[str, ...]:
    names = dict.fromkeys([*section.fields.values(), *section.required])
    for text in (section.reject_if, section.ignore_if):
        if text:
            for group in query.parse(text).groups:
                for clause in group:
                    names.update(dict.fromkeys(c.field for c in clause))
    return tuple(n for n in names if n and not n.startswith("sys_"))


@dataclasses.dataclass(slots=True)  # not frozen: one per row, and a frozen __init__ costs more
class Outcome:
    status: str  # inserted | updated | ignored | skipped | error
    target_sys_id: str = ""  # the target record, when the row has one
    display_value: str = ""
    message: str = ""  # status_message, or error_message for an error


def transform(tm: TransformMap, source: Record, writer: Writer, user: str) -> Outcome:
    """Apply ``tm`` to one staging row, writing the target record through ``writer``."""
    get = source.get
    if tm.required:
        missing = [f for f in tm.required if not get(f, "")]
        if missing:
            return Outcome("error", message=f"Mandatory field(s) empty in the source row: {', '.join(missing)}")
    if tm.reject is not None and tm.reject(source):
        return Outcome("error", message=tm.reject_message)

    values = {k: v for k, v in source.items() if not k.startswith("sys_")} if tm.auto_map else {}
    values.update([(target_field, get(source_field, "")) for target_field, source_field in tm.fields])
    table = writer.table(tm.target)
    key = _stored_key(table, tm.coalesce, values)
    if not tm.copy_empty_fields:  # an empty source value leaves the target's value alone
        values = {k: v for k, v in values.items() if v}
    wanted_sys_id = ""
    if tm.maps_sys_fields:  # rare: a map that names sys_id (to coalesce on it) or another sys_ field
        wanted_sys_id = values.pop("sys_id", "")
        values = {k: v for k, v in values.items() if not k.startswith("sys_")}

    values = _as_stored(table, values)
    existing: Record | None = None
    if tm.coalesce:
        if not any(key):
            if not tm.create_on_empty_coalesce:
                return Outcome("skipped", message=f"Coalesce field(s) empty: {', '.join(tm.coalesce)}")
        else:
            existing = table.find(tm.coalesce, key)

    if tm.ignore is not None and tm.ignore(source):
        return _with_target("ignored", existing, tm, "Row ignored by transform map (ignore_if)")
    if existing is None:
        if tm.update_only:
            return Outcome("ignored", message="No record matched the coalesce fields (update_only)")
        sys_id = (
            wanted_sys_id if wanted_sys_id and is_sys_id(wanted_sys_id) and table.get(wanted_sys_id) is None else None
        )
        record = new_record(values, user, writer.now, sys_id)
        writer.insert(table, record)
        return _with_target("inserted", record, tm)
    changes = changed_fields(existing, values)
    if not changes:
        return _with_target("ignored", existing, tm, "No field values changed")
    record = touched(existing, changes, user, writer.now)
    writer.update(table, record)
    return _with_target("updated", record, tm)


def _stored_key(table: Table, fields: tuple[str, ...], values: dict[str, str]) -> tuple[str, ...]:
    """The coalesce values in the target's stored form (a date written another way still matches)."""
    definition = table.definition
    key = []
    for name in fields:
        value = values.get(name, "")
        field = definition.fields.get(name) if definition is not None and not name.startswith("sys_") else None
        key.append(store_value(field, value) if field is not None and value else value)
    return tuple(key)


def _as_stored(table: Table, values: dict[str, str]) -> dict[str, str]:
    """The values as the target table would store them: fields it lacks dropped, each value in
    its type's form. So an unchanged record compares unchanged ("ignored") however the source
    wrote a date or a number, and a field the target lacks never makes an update, as on an
    instance. Coalesce keys are looked up in this form too (the store matches ignoring case)."""
    definition = table.definition
    if definition is None or definition.extensible:  # lenient: kept verbatim, as the store keeps them
        return values
    out = {}
    for name, value in values.items():
        field = definition.fields.get(name)
        if field is not None:
            out[name] = store_value(field, value)
    return out


def _with_target(status: str, record: Record | None, tm: TransformMap, message: str = "") -> Outcome:
    if record is None:
        return Outcome(status, message=message)
    return Outcome(status, record["sys_id"], record.get(tm.display_field, ""), message)
