"""What the configuration and a sink need of the instance (pure): tables, fields, presets."""

from __future__ import annotations

from dataclasses import dataclass

from bridgehead.control.sinks.allowlist import refusal, written_tables
from bridgehead.control.sinks.config import ServiceNowInstance
from bridgehead.control.sinks.preflight.rows import ID_FIELD_LENGTH, MAX_TABLES
from bridgehead.control.sinks.presets import ID_FIELD, MEMBERS_TABLE, PRESETS
from bridgehead.control.sinks.spec import SinkSpec


@dataclass(frozen=True)
class FieldNeed:
    table: str
    field: str
    why: str  # "coalesce", "map <- key", "preset ldap_users", ...
    coalesce: bool = False
    required: bool = True  # missing: fail (else warn: a preset the configuration allows, unused here)
    min_length: int = 0


@dataclass(frozen=True)
class Needs:
    tables: tuple[str, ...]  # each checked: exists, readable
    import_sets: tuple[str, ...]  # of those, the ones a sink sends insertMultiple to
    fields: tuple[FieldNeed, ...]
    unchecked: int = 0  # configured tables past MAX_TABLES
    refused: str | None = None  # the sink is not allowed on this instance (allowlist)


def _preset_needs(preset_name: str, required: bool) -> list[FieldNeed]:
    preset = PRESETS[preset_name]
    why = f"preset {preset_name}"
    needs = [FieldNeed(preset.table, ID_FIELD, why, True, required, ID_FIELD_LENGTH)]
    needs += [FieldNeed(preset.table, target, why, required=required) for target, _keys in preset.fields]
    needs += [FieldNeed(preset.table, name, why, required=required) for name in ("source", "active")]
    if preset.members:
        needs += [FieldNeed(MEMBERS_TABLE, name, why, required=required) for name in ("group", "user")]
        needs.append(FieldNeed("sys_user", "source", f"{why} (members by source)", required=required))
    return needs


def needs_of(name: str, instance: ServiceNowInstance, spec: SinkSpec | None) -> Needs:
    """What the configured tables, the presets they allow and the sink (if any) need."""
    tables: list[str] = []
    import_sets: list[str] = []
    fields: list[FieldNeed] = []

    def add(table: str) -> None:
        if table.lower() not in (t.lower() for t in tables):
            tables.append(table)

    refused = None
    if spec is not None:
        refused = refusal(name, instance, spec)
        for kind, table in written_tables(spec):
            add(table)
            if kind == "import set":
                import_sets.append(table)
        if spec.preset is not None:
            fields += _preset_needs(spec.preset, required=True)
        elif spec.table is not None:
            fields += [FieldNeed(spec.table, f, "coalesce", coalesce=True) for f in spec.coalesce]
            fields += [FieldNeed(spec.table, t, f"map <- {k}") for t, k in spec.map.items() if t not in spec.coalesce]
        elif spec.import_set is not None:
            fields += [FieldNeed(spec.import_set, t, f"map <- {k}") for t, k in spec.map.items()]
    allowed = {t.lower() for t in instance.tables}
    for preset_name, preset in PRESETS.items():
        if spec is not None and spec.preset == preset_name:
            continue
        own = {preset.table} | ({MEMBERS_TABLE} if preset.members else set())
        if own <= allowed:  # the configuration lets this preset deliver: say what it would need
            fields += [n for n in _preset_needs(preset_name, required=False) if n not in fields]
    for table in instance.tables:
        add(table)
    for need in fields:
        add(need.table)
    budget = MAX_TABLES + (len(written_tables(spec)) if spec is not None else 0)
    return Needs(
        tables=tuple(tables[:budget]),
        import_sets=tuple(import_sets),
        fields=tuple(_unique(fields)),
        unchecked=max(0, len(tables) - budget),
        refused=refused,
    )


def _unique(needs: list[FieldNeed]) -> list[FieldNeed]:
    """One need per table and field: a required or coalesce one wins over a mere warning."""
    kept: dict[tuple[str, str], FieldNeed] = {}
    for need in needs:
        key = (need.table.lower(), need.field.lower())
        old = kept.get(key)
        if old is None or (need.required and not old.required) or (need.coalesce and not old.coalesce):
            kept[key] = need
    return list(kept.values())


# --- what the instance shows ---------------------------------------------------------------
