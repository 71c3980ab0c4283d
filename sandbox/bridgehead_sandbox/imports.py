"""Import sets: stage the rows a client posts, run the transform map, report each row.

One request is one import set (a ``sys_import_set`` record numbered ``ISET0010001`` on), one
SQLite transaction and one pass over its rows. Staging rows are kept in the staging table with
the row's outcome, as an instance keeps them, so the Table API (``GET /api/now/table/<staging>``)
and ``GET /api/now/import/<staging>/<sys_id>`` can read them back:

    sys_import_set            the import set's sys_id
    sys_import_row            the row's position in the request
    sys_import_state          inserted | updated | ignored | skipped | error
    sys_import_state_comment  the status or error message
    sys_target_table, sys_target_sys_id, sys_transform_map

A staging table with no transform map stores its rows and reports each one ``skipped`` with
the staging row's sys_id, as the SOAP doc describes a row that produced no target record
(SERVICENOW_API.md §3.1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from bridgehead_sandbox.records import new_record, new_sys_id, now_text
from bridgehead_sandbox.store import Record, Store
from bridgehead_sandbox.transform import Outcome, TransformMap, transform

FIRST_IMPORT_SET = 10_001  # instances number import sets ISET0010001, ISET0010002, ...


@dataclasses.dataclass(frozen=True)
class ImportSet:
    number: str
    sys_id: str
    staging_table: str
    results: list[dict[str, Any]]
    multi_sys_id: str = ""


class Importer:
    def __init__(self, store: Store, maps: Mapping[str, TransformMap]) -> None:
        self.store = store
        self.maps = dict(maps)

    def load(self, staging: str, rows: Sequence[Record], user: str, base_url: str, *, multi: bool) -> ImportSet:
        """Stage and transform ``rows`` in one transaction; ``base_url`` ends with ``/``."""
        now = now_text()
        tm = self.maps.get(staging)
        with self.store.transaction(now) as writer:
            number = f"ISET{writer.next_number('sys_import_set', FIRST_IMPORT_SET):07d}"
            multi_sys_id = ""
            if multi:
                multi_record = new_record({"state": "complete"}, user, now)
                writer.insert(writer.table("sys_multi_import_set"), multi_record)
                multi_sys_id = multi_record["sys_id"]
            import_set = new_record(
                {
                    "number": number,
                    "table_name": staging,
                    "state": "processed",
                    "mode": "synchronous",
                    "multi_import_set_id": multi_sys_id,
                },
                user,
                now,
            )
            writer.insert(writer.table("sys_import_set"), import_set)
            staging_table = writer.table(staging)
            results = []
            for position, source in enumerate(rows):
                staging_sys_id = new_sys_id()
                if tm is None:
                    outcome = Outcome("skipped", message=f"No transform map for staging table {staging}")
                else:
                    outcome = transform(tm, source, writer, user)
                state = _row_state(import_set["sys_id"], position, tm, outcome)
                writer.insert(staging_table, new_record({**source, **state}, user, now, staging_sys_id))
                results.append(result_entry(tm, outcome, staging_sys_id, base_url))
        return ImportSet(number, import_set["sys_id"], staging, results, multi_sys_id)

    def row_result(self, staging: str, sys_id: str, base_url: str) -> ImportSet | None:
        """``GET /api/now/import/<staging>/<sys_id>``: a staging row's result, read back."""
        table = self.store.table(staging)
        row = table.get(sys_id) if table is not None else None
        if row is None or "sys_import_state" not in row:
            return None
        sets = self.store.table("sys_import_set")
        import_set = sets.get(row.get("sys_import_set", "")) if sets is not None else None
        tm = self.maps.get(staging)
        target_sys_id = row.get("sys_target_sys_id", "")
        display_value = ""
        target = self.store.table(row.get("sys_target_table", ""))
        if target is not None and target_sys_id and tm is not None:
            display_value = (target.get(target_sys_id) or {}).get(tm.display_field, "")
        outcome = Outcome(
            row["sys_import_state"], target_sys_id, display_value, row.get("sys_import_state_comment", "")
        )
        number = import_set.get("number", "") if import_set is not None else ""
        return ImportSet(number, row.get("sys_import_set", ""), staging, [result_entry(tm, outcome, sys_id, base_url)])


def _row_state(import_set_sys_id: str, position: int, tm: TransformMap | None, outcome: Outcome) -> dict[str, str]:
    return {
        "sys_import_set": import_set_sys_id,
        "sys_import_row": str(position),
        "sys_import_state": outcome.status,
        "sys_import_state_comment": outcome.message,
        "sys_target_table": tm.target if tm is not None and outcome.target_sys_id else "",
        "sys_target_sys_id": outcome.target_sys_id,
        "sys_transform_map": tm.name if tm is not None else "",
    }


def result_entry(tm: TransformMap | None, outcome: Outcome, staging_sys_id: str, base_url: str) -> dict[str, Any]:
    """One entry of ``result``: the target record's sys_id and link when the row has one, the
    staging row's sys_id otherwise; ``error_message`` on an error, ``status_message`` on the rest."""
    target = tm.target if tm is not None else ""
    entry: dict[str, Any] = {
        "transform_map": tm.name if tm is not None else "",
        "table": target,
        "display_name": tm.display_field if tm is not None else "",
        "display_value": outcome.display_value,
        "record_link": f"{base_url}api/now/table/{target}/{outcome.target_sys_id}" if outcome.target_sys_id else "",
        "status": outcome.status,
        "sys_id": outcome.target_sys_id or staging_sys_id,
    }
    if outcome.status == "error":
        entry["error_message"] = outcome.message
    elif outcome.message:
        entry["status_message"] = outcome.message
    return entry
