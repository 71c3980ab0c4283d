"""What the SQLite store keeps for recurring schedules (bridgehead.control.schedules).

One row per schedule: its definition, and the state the scheduler needs after a restart:
the next occurrence (a past one means a run was missed while the control plane was down)
and the last run's job (a run never overlaps the previous one).

Occurrences are claimed as on PostgreSQL (``store.schedules``), but the claims live with the
store, not in the file: one control-plane process runs a data dir's scheduler.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable
from typing import Literal

from bridgehead.control.store.rows import ScheduleRow, json_size
from bridgehead.control.store.sql_rows import SCHEDULE_COLUMNS, schedule_row
from bridgehead.control.store.sqlite.writer import GroupCommit
from bridgehead.core.wal_sync import WalSync

SCHEDULE_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    job TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    next_run_at REAL,
    last_run_at REAL,
    last_job_id TEXT,
    runs INTEGER NOT NULL DEFAULT 0,
    skipped_overlaps INTEGER NOT NULL DEFAULT 0,
    last_error_code TEXT,
    last_error_message TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (next_run_at) WHERE enabled = 1;
"""


class ScheduleTables(GroupCommit):
    def __init__(self, db: sqlite3.Connection, wal_sync: WalSync | None = None) -> None:
        super().__init__(db, wal_sync)
        self._claims: dict[str, tuple[str, float]] = {}  # schedule name: (node, until)

    async def add_schedule(self, schedule: ScheduleRow, limit: int) -> Literal["created", "exists", "full"]:
        def op() -> Literal["created", "full"]:
            # Counted in the insert's own transaction, so concurrent creations cannot pass the limit.
            (count,) = self.db.execute("SELECT count(*) FROM schedules").fetchone()
            if count >= limit:
                return "full"
            self.db.execute(
                f"INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - fixed column list
                (
                    schedule.name,
                    schedule.cron,
                    schedule.timezone,
                    json.dumps(schedule.job),
                    int(schedule.enabled),
                    schedule.next_run_at,
                    schedule.last_run_at,
                    schedule.last_job_id,
                    schedule.runs,
                    schedule.skipped_overlaps,
                    schedule.last_error_code,
                    schedule.last_error_message,
                    schedule.created_at,
                ),
            )
            return "created"

        try:
            return await self._write(op, isolated=True)
        except sqlite3.IntegrityError:
            return "exists"

    async def get_schedule(self, name: str) -> ScheduleRow | None:
        row = self.db.execute(f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name=?", (name,)).fetchone()  # noqa: S608
        return schedule_row(row) if row else None

    async def list_schedules(self, after: str = "", limit: int = -1, max_bytes: int | None = None) -> list[ScheduleRow]:
        cursor = self.db.execute(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name > ? ORDER BY name LIMIT ?",  # noqa: S608
            (after, limit),
        )
        out: list[ScheduleRow] = []
        size = 0
        for row in cursor:  # each holds a job template (up to jobs.max_params_bytes): stop at max_bytes
            out.append(schedule_row(row))
            size += json_size(out[-1].job)
            if max_bytes is not None and size >= max_bytes:
                cursor.close()
                break
        return out

    async def due_schedules(self, now: float) -> list[ScheduleRow]:
        rows = self.db.execute(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE enabled=1 AND next_run_at<=? ORDER BY next_run_at, name",  # noqa: S608
            (now,),
        ).fetchall()
        return [schedule_row(r) for r in rows]

    async def next_schedule_at(self) -> float | None:
        row = self.db.execute("SELECT min(next_run_at) FROM schedules WHERE enabled=1").fetchone()
        return float(row[0]) if row and row[0] is not None else None

    async def delete_schedule(self, name: str) -> bool:
        def op() -> bool:
            self._claims.pop(name, None)
            return bool(self.db.execute("DELETE FROM schedules WHERE name=?", (name,)).rowcount)

        return await self._write(op)

    async def set_schedule_enabled(self, name: str, enabled: bool, next_run_at: float | None) -> bool:
        def op() -> bool:
            self._claims.pop(name, None)
            return bool(
                self.db.execute(
                    "UPDATE schedules SET enabled=?, next_run_at=? WHERE name=?", (int(enabled), next_run_at, name)
                ).rowcount
            )

        return await self._write(op)

    async def claim_schedule(self, name: str, occurrence: float, node: str, now: float, until: float) -> bool:
        def op() -> bool:
            holder, held_until = self._claims.get(name, (node, 0.0))
            if holder != node and held_until >= now:
                return False
            row = self.db.execute(
                "SELECT 1 FROM schedules WHERE name=? AND enabled=1 AND next_run_at=?", (name, occurrence)
            ).fetchone()
            if row is not None:
                self._claims[name] = (node, until)
            return row is not None

        return await self._write(op)

    def record_schedule_run(
        self, name: str, job_id: str, now: float, next_run_at: float | None, occurrence: float | None = None
    ) -> Awaitable[bool]:
        def op() -> bool:
            self._claims.pop(name, None)
            return bool(
                self.db.execute(
                    "UPDATE schedules SET last_job_id=?, last_run_at=?, next_run_at=?, runs=runs+1, "
                    "last_error_code=NULL, last_error_message=NULL WHERE name=? AND (? IS NULL OR next_run_at=?)",
                    (job_id, now, next_run_at, name, occurrence, occurrence),
                ).rowcount
            )

        return self._write(op)

    def record_schedule_skip(
        self,
        name: str,
        next_run_at: float | None,
        overlap: bool,
        error: tuple[str, str] | None,
        occurrence: float | None = None,
    ) -> Awaitable[bool]:
        code, message = error if error is not None else (None, None)

        def op() -> bool:
            self._claims.pop(name, None)
            return bool(
                self.db.execute(
                    "UPDATE schedules SET next_run_at=?, skipped_overlaps=skipped_overlaps+?, "
                    "last_error_code=coalesce(?, last_error_code), last_error_message=coalesce(?, last_error_message) "
                    "WHERE name=? AND (? IS NULL OR next_run_at=?)",
                    (next_run_at, int(overlap), code, message, name, occurrence, occurrence),
                ).rowcount
            )

        return self._write(op)
