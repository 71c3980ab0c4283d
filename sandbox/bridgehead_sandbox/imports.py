"""Import sets: stage the rows a client posts, run the transform map, record each row's outcome.

One request is one import set: a ``sys_import_set`` record (numbered ``ISET0010001`` on) and
one staging row per posted row. A staging table extends ``sys_import_set_row`` on an instance
(table-per-class storage), so each staging row is kept twice, with the same sys_id: in the
staging table (the posted columns and the row's state) and in ``sys_import_set_row`` (the
state only, ``sys_class_name`` = the staging table). Both are readable through the Table API:

    sys_import_set            the import set's sys_id (a reference)
    sys_import_row            the row's position in the request, from 0
    sys_import_state          pending, then inserted | updated | ignored | skipped | error
    sys_import_state_comment  the status or error message
    sys_target_table, sys_target_sys_id, sys_transform_map

``insertMultiple`` is asynchronous by default, as on an instance (SERVICENOW_API.md §3.3): the
request stages the rows (import set state ``loaded``, rows ``pending``) and answers the two
ids; one background worker transforms import sets in the order they came (so an import set
``run_after`` another is honoured for free), a chunk of rows per SQLite transaction, and sets
the import set ``processed``. A client polls ``sys_import_set`` and reads the rows' outcomes
from ``sys_import_set_row``. A synchronous transform (the single-row API, ``insert_multiple =
"sync"``, or a ``sys_rest_insert_multiple`` record that says so) runs the same chunks inside
the request, so the transaction quota can cancel it between chunks, leaving the rows done so
far done, as an instance leaves them.

Keys: ``insertMultiple`` takes the staging table's column *labels* unless the staging table's
``sys_rest_insert_multiple`` record says column names; a key that matches no column goes
nowhere, as on an instance. The columns are the staging table's definition, or, for a
staging table that has none, its transform map's source fields (:func:`derived_columns`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from bridgehead_sandbox.errors import SnError
from bridgehead_sandbox.records import new_record, now_text, touched
from bridgehead_sandbox.store import Record, Store, Writer
from bridgehead_sandbox.transform import Outcome, TransformMap, transform

log = logging.getLogger("bridgehead.sandbox.imports")

FIRST_IMPORT_SET = 10_001  # instances number import sets ISET0010001, ISET0010002, ...
CHUNK_ROWS = 200  # rows per SQLite transaction while transforming (the SOAP doc's batch size)
ROW_TABLE = "sys_import_set_row"
SET_TABLE = "sys_import_set"
MULTI_TABLE = "sys_multi_import_set"
SETUP_TABLE = "sys_rest_insert_multiple"
# sys_import_set_row's own fields: a staging table inherits them, but they are not its columns.
_ROW_FIELDS = frozenset({"template_import_log"})

ColumnMode = Literal["label", "name", "label_or_name"]
Mode = Literal["sync", "async"]


@dataclasses.dataclass(frozen=True)
class StagingColumns:
    """A staging table's columns: lower-cased label -> column name, and the names.

    ``open`` (a map with ``auto_map`` and no definition): any key is a column name."""

    by_label: Mapping[str, str]
    names: frozenset[str]
    open: bool = False

    def resolve(self, row: Mapping[str, str], mode: ColumnMode) -> dict[str, str]:
        """The row keyed by column names; keys that match no column are dropped."""
        out: dict[str, str] = {}
        for key, value in row.items():
            name = None
            if mode != "name":
                name = self.by_label.get(key.strip().lower())
            if name is None and mode != "label" and (key in self.names or self.open):
                name = key
            if name is None and self.open and mode == "label":
                name = column_for_label(key)
            if name is not None and not name.startswith("sys_"):
                out[name] = value
        return out


def label_for_column(name: str) -> str:
    """The label an instance shows for an import set column: ``u_first_name`` -> "First name"."""
    words = (name[2:] if name.startswith("u_") else name).replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def column_for_label(label: str) -> str:
    """The column an instance creates for a label: "First Name" -> ``u_first_name``."""
    body = "".join(c if c.isalnum() else "_" for c in label.strip().lower())
    return "u_" + body


def derived_columns(tm: TransformMap) -> StagingColumns:
    """Columns of a staging table that has no definition: its map's source fields."""
    names = set(tm.source_fields)
    return StagingColumns({label_for_column(n).lower(): n for n in sorted(names)}, frozenset(names), tm.auto_map)


@dataclasses.dataclass(frozen=True)
class ImportSet:
    number: str
    sys_id: str
    staging_table: str
    results: list[dict[str, Any]]
    multi_sys_id: str = ""


@dataclasses.dataclass(frozen=True)
class Setup:
    """How insertMultiple treats one staging table (its ``sys_rest_insert_multiple`` record)."""

    mode: Mode
    columns: ColumnMode


class Importer:
    def __init__(
        self,
        store: Store,
        maps: Mapping[str, TransformMap],
        *,
        default_mode: Mode = "async",
        default_columns: ColumnMode = "label",
        async_delay_s: float = 0.0,
    ) -> None:
        self.store = store
        self.maps = dict(maps)
        self.default_mode: Mode = default_mode
        self.default_columns: ColumnMode = default_columns
        self.async_delay_s = async_delay_s
        self._derived = {staging: derived_columns(tm) for staging, tm in self.maps.items()}
        self._queue: asyncio.Queue[str] | None = None
        self._worker: asyncio.Task[None] | None = None

    # --- what the client may send -----------------------------------------------------------

    def columns(self, staging: str) -> StagingColumns | None:
        """The staging table's columns: its definition (``sys_dictionary``) plus, for a table a
        transform map reads, the map's source fields; None when the sandbox has no schema and no
        map (lenient: keys are taken as column names)."""
        derived = self._derived.get(staging)
        schema = self.store.schema
        definition = schema.table(staging) if schema is not None else None
        if definition is None:
            return derived
        by_label: dict[str, str] = {}
        names: set[str] = set()
        for field in definition.fields.values():
            if not field.name.startswith("sys_") and field.name not in _ROW_FIELDS:
                by_label.setdefault(field.label.casefold(), field.name)
                names.add(field.name)
        if derived is not None:
            for label, name in derived.by_label.items():
                by_label.setdefault(label, name)
            names |= derived.names
        # An import set table nobody maps takes its columns from the data, as a data source load does.
        is_open = definition.extensible and derived is None
        return StagingColumns(by_label, frozenset(names), is_open or (derived is not None and derived.open))

    def setup(self, staging: str) -> Setup:
        """The staging table's ``sys_rest_insert_multiple`` record, or the configured defaults.

        Fields read (the record's own names are not in the documentation we have; these are the
        form's labels in lower case): ``source_table`` (or ``table_name``), ``transformation``
        (``synchronous`` | ``asynchronous``) and ``column_mapping`` (``name`` | ``label``)."""
        mode, columns = self.default_mode, self.default_columns
        table = self.store.table(SETUP_TABLE)
        if table is None:
            return Setup(mode, columns)
        for record in table.rows.values():
            if (record.get("source_table") or record.get("table_name") or "").lower() != staging.lower():
                continue
            if record.get("active", "true") == "false":
                continue
            transformation = record.get("transformation", "").lower()
            if transformation.startswith("sync"):
                mode = "sync"
            elif transformation.startswith("async"):
                mode = "async"
            mapping = record.get("column_mapping", "").lower()
            if "name" in mapping:
                columns = "name"
            elif "label" in mapping:
                columns = "label"
            break
        return Setup(mode, columns)

    def source_rows(self, staging: str, rows: Sequence[Mapping[str, str]], mode: ColumnMode) -> list[dict[str, str]]:
        columns = self.columns(staging)
        if columns is None:
            return [{k: v for k, v in row.items() if not k.startswith("sys_")} for row in rows]
        return [columns.resolve(row, mode) for row in rows]

    # --- loading and transforming -----------------------------------------------------------

    def stage(
        self, staging: str, rows: Sequence[Record], user: str, *, mode: Mode, multi: bool, multi_sys_id: str = ""
    ) -> ImportSet:
        """One transaction: the import set (``loaded``), its multi import set and its rows (``pending``)."""
        now = now_text()
        tm = self.maps.get(staging)
        with self.store.transaction(now) as writer:
            number = f"ISET{writer.next_number(SET_TABLE, FIRST_IMPORT_SET):07d}"
            if multi and not multi_sys_id:
                multi_record = new_record({"state": "processing" if mode == "async" else "complete"}, user, now)
                writer.insert(writer.table(MULTI_TABLE), multi_record)
                multi_sys_id = multi_record["sys_id"]
            import_set = new_record(
                {
                    "number": number,
                    "table_name": staging,
                    "state": "loaded",
                    "load_completed": now,
                    "mode": "asynchronous" if mode == "async" else "synchronous",
                    "multi_import_set": multi_sys_id,
                    "short_description": f"REST import into {staging}",
                },
                user,
                now,
            )
            set_id = import_set["sys_id"]
            writer.insert(writer.table(SET_TABLE), import_set)
            staging_table, row_table = writer.table(staging), writer.table(ROW_TABLE)
            for position, source in enumerate(rows):
                state = {
                    "sys_import_set": set_id,
                    "sys_import_row": str(position),
                    "sys_import_state": "pending",
                    "sys_import_state_comment": "",
                    "sys_target_table": "",
                    "sys_target_sys_id": "",
                    "sys_transform_map": tm.name if tm is not None else "",
                    "sys_class_name": staging,
                }
                row = new_record({**source, **state}, user, now)
                writer.insert(staging_table, row)
                writer.insert(row_table, new_record(state, user, now, row["sys_id"]))
        return ImportSet(number, set_id, staging, [], multi_sys_id)

    async def load(
        self,
        staging: str,
        rows: Sequence[Record],
        user: str,
        base_url: str,
        *,
        multi: bool,
        multi_sys_id: str = "",
    ) -> ImportSet:
        """Stage and transform at once (the single-row API, a synchronous insertMultiple)."""
        staged = self.stage(staging, rows, user, mode="sync", multi=multi, multi_sys_id=multi_sys_id)
        try:
            results = await self.transform_set(staged.sys_id, user, base_url)
        except asyncio.CancelledError:  # the transaction quota: rows done so far stay done
            self._set_state(staged.sys_id, "cancelled")
            raise
        return dataclasses.replace(staged, results=results)

    async def transform_set(self, set_sys_id: str, user: str, base_url: str = "") -> list[dict[str, Any]]:
        """Transform an import set's pending rows, a chunk per transaction; mark it processed."""
        sets = self.store.table(SET_TABLE)
        import_set = sets.get(set_sys_id) if sets is not None else None
        if import_set is None:
            return []
        staging = import_set.get("table_name", "")
        tm = self.maps.get(staging)
        ids = self._row_ids(staging, set_sys_id)
        results: list[dict[str, Any]] = []
        for start in range(0, len(ids), CHUNK_ROWS):
            chunk = ids[start : start + CHUNK_ROWS]
            try:
                with self.store.transaction(now_text()) as writer:
                    results += [self._transform_row(writer, staging, tm, i, user, base_url) for i in chunk]
            except SnError:  # one row could not be written (say max_records): find which, row by row
                for sys_id in chunk:
                    results.append(self._transform_alone(staging, tm, sys_id, user, base_url))
            await asyncio.sleep(0)  # let other requests (and the quota's cancel) in between chunks
        self._finish(set_sys_id)
        return results

    def _row_ids(self, staging: str, set_sys_id: str) -> list[str]:
        table = self.store.table(staging)
        if table is None:
            return []
        rows = [
            r
            for r in table.rows.values()
            if r.get("sys_import_set") == set_sys_id and r.get("sys_import_state") == "pending"
        ]
        rows.sort(key=lambda r: int(r.get("sys_import_row", "0") or 0))
        return [r["sys_id"] for r in rows]

    def _transform_row(
        self, writer: Writer, staging: str, tm: TransformMap | None, sys_id: str, user: str, base_url: str
    ) -> dict[str, Any]:
        staging_table = writer.table(staging)
        row = staging_table.get(sys_id)
        if row is None:  # deleted while pending
            return result_entry(tm, Outcome("error", message="The staging row was deleted"), sys_id, base_url)
        if tm is None:
            outcome = Outcome("skipped", message=f"No transform map for staging table {staging}")
        else:
            source = {k: v for k, v in row.items() if not k.startswith("sys_")}
            outcome = transform(tm, source, writer, user)
        self._record_outcome(writer, staging, tm, row, outcome, user)
        return result_entry(tm, outcome, sys_id, base_url)

    def _transform_alone(
        self, staging: str, tm: TransformMap | None, sys_id: str, user: str, base_url: str
    ) -> dict[str, Any]:
        try:
            with self.store.transaction(now_text()) as writer:
                return self._transform_row(writer, staging, tm, sys_id, user, base_url)
        except SnError as exc:
            outcome = Outcome("error", message=exc.detail or exc.message)
            with contextlib.suppress(SnError), self.store.transaction(now_text()) as writer:
                row = writer.table(staging).get(sys_id)
                if row is not None:
                    self._record_outcome(writer, staging, tm, row, outcome, user)
            return result_entry(tm, outcome, sys_id, base_url)

    @staticmethod
    def _record_outcome(
        writer: Writer, staging: str, tm: TransformMap | None, row: Record, outcome: Outcome, user: str
    ) -> None:
        state = {
            "sys_import_state": outcome.status,
            "sys_import_state_comment": outcome.message,
            "sys_target_table": tm.target if tm is not None and outcome.target_sys_id else "",
            "sys_target_sys_id": outcome.target_sys_id,
        }
        writer.update(writer.table(staging), touched(row, state, user, writer.now))
        mirror_table = writer.table(ROW_TABLE)
        mirror = mirror_table.get(row["sys_id"])
        if mirror is not None:
            writer.update(mirror_table, touched(mirror, state, user, writer.now))

    def _set_state(self, set_sys_id: str, state: str) -> None:
        with self.store.transaction(now_text()) as writer:
            sets = writer.table(SET_TABLE)
            import_set = sets.get(set_sys_id)
            if import_set is not None:
                user = import_set.get("sys_created_by", "")
                writer.update(sets, touched(import_set, {"state": state}, user, writer.now))

    def _finish(self, set_sys_id: str) -> None:
        with self.store.transaction(now_text()) as writer:
            sets = writer.table(SET_TABLE)
            import_set = sets.get(set_sys_id)
            if import_set is None:
                return
            user = import_set.get("sys_created_by", "")
            writer.update(sets, touched(import_set, {"state": "processed"}, user, writer.now))
            multi_id = import_set.get("multi_import_set", "")
            multis = writer.table(MULTI_TABLE)
            multi = multis.get(multi_id) if multi_id else None
            if multi is not None and multi.get("state") != "complete":
                writer.update(multis, touched(multi, {"state": "complete"}, user, writer.now))

    # --- the background worker --------------------------------------------------------------

    def start(self) -> None:
        """Start the background worker (on the running loop) with the import sets staged
        before a restart and not yet processed."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            for pending in self._unfinished():
                self._queue.put_nowait(pending)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work(self._queue))

    def submit(self, set_sys_id: str) -> None:
        """Queue an import set for the background transform."""
        self.start()
        if self._queue is not None:
            self._queue.put_nowait(set_sys_id)

    def _unfinished(self) -> list[str]:
        sets = self.store.table(SET_TABLE)
        if sets is None:
            return []
        return [
            sys_id
            for sys_id, record in sets.rows.items()
            if record.get("mode") == "asynchronous" and record.get("state") in ("loading", "loaded")
        ]

    async def _work(self, queue: asyncio.Queue[str]) -> None:
        while True:
            set_sys_id = await queue.get()
            try:
                if self.async_delay_s > 0:
                    await asyncio.sleep(self.async_delay_s)
                sets = self.store.table(SET_TABLE)
                record = sets.get(set_sys_id) if sets is not None else None
                await self.transform_set(set_sys_id, record.get("sys_created_by", "") if record else "")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the background transform of import set %s failed", set_sys_id)
            finally:
                queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued import set is transformed (for shutdown and tests)."""
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    # --- reading back -----------------------------------------------------------------------

    def row_result(self, staging: str, sys_id: str, base_url: str) -> ImportSet | None:
        """``GET /api/now/import/<staging>/<sys_id>``: a staging row's result, read back."""
        table = self.store.table(staging)
        row = table.get(sys_id) if table is not None else None
        if row is None or "sys_import_state" not in row:
            return None
        sets = self.store.table(SET_TABLE)
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
