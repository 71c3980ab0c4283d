"""What a sink may touch on its instance: the ``tables`` and ``allow_delete`` keys of
``[servicenow.NAME]``. Checked when a job or schedule is submitted, and again before each
delivery, so a job stored before the configuration changed is refused then rather than written.
"""

from __future__ import annotations

from bridgehead.control.sinks.config import ServiceNowInstance
from bridgehead.control.sinks.presets import MEMBERS_TABLE, PRESETS
from bridgehead.control.sinks.spec import SinkSpec


def written_tables(spec: SinkSpec) -> list[tuple[str, str]]:
    """``(kind, name)`` of every table or import set the sink writes."""
    if spec.preset is not None:
        preset = PRESETS[spec.preset]
        tables = [("table", preset.table)]
        if preset.members:
            tables.append(("table", MEMBERS_TABLE))
        return tables
    if spec.import_set is not None:
        return [("import set", spec.import_set)]
    return [("table", spec.table or "")]


def refusal(name: str, instance: ServiceNowInstance, spec: SinkSpec) -> str | None:
    """Why ``instance`` (``[servicenow.NAME]``) does not let ``spec`` deliver, or ``None``."""
    allowed = {table.lower() for table in instance.tables}
    via = f" (preset {spec.preset})" if spec.preset is not None else ""
    for kind, table in written_tables(spec):
        if table.lower() not in allowed:
            listed = ", ".join(instance.tables) or "none"
            return (
                f"{kind} {table!r}{via} is not in the tables of [servicenow.{name}] (it allows: {listed}); "
                f"an admin adds it to tables in the control plane's configuration"
            )
    if spec.on_delete == "delete" and not instance.allow_delete:
        return (
            f'on_delete = "delete" would delete rows; [servicenow.{name}] does not allow it '
            f'(allow_delete = false); use "deactivate", or an admin sets allow_delete = true'
        )
    return None
