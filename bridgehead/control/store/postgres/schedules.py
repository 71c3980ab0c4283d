"""The PostgreSQL store's recurring schedules and their run state (``store.schedules``)."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Literal

import asyncpg

from bridgehead.control.store.postgres.writer import GroupCommit
from bridgehead.control.store.rows import ScheduleRow, json_size
from bridgehead.control.store.sql_rows import SCHEDULE_COLUMNS, schedule_row


class ScheduleTables(GroupCommit):
    async def add_schedule(self, schedule: ScheduleRow, limit: int) -> Literal["created", "exists", "full"]:
        async def op(db: asyncpg.Connection) -> Literal["created", "exists", "full"]:
            # Creations take this lock in turn (across nodes too), so the count below is the
            # count the insert sees: concurrent creations cannot pass the limit.
            await db.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.bridgehead_schedules'))")
            if await db.fetchval("SELECT 1 FROM schedules WHERE name=$1", schedule.name):
                return "exists"
            if await db.fetchval("SELECT count(*) FROM schedules") >= limit:
                return "full"
            await db.execute(
                f"INSERT INTO schedules ({SCHEDULE_COLUMNS}) "  # noqa: S608 - fixed column list
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",  # noqa: S608 - fixed column list
                schedule.name,
                schedule.cron,
                schedule.timezone,
                json.dumps(schedule.job),
                schedule.enabled,
                schedule.next_run_at,
                schedule.last_run_at,
                schedule.last_job_id,
                schedule.runs,
                schedule.skipped_overlaps,
                schedule.last_error_code,
                schedule.last_error_message,
                schedule.created_at,
            )
            return "created"

        return await self._write(op)

    async def get_schedule(self, name: str) -> ScheduleRow | None:
        row = await (await self._reads()).fetchrow(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name=$1",  # noqa: S608 - fixed column list
            name,
        )
        return schedule_row(row) if row else None

    async def list_schedules(self, after: str = "", limit: int = -1, max_bytes: int | None = None) -> list[ScheduleRow]:
        out: list[ScheduleRow] = []
        size = 0
        async with (await self._reads()).acquire() as db, db.transaction():
            cursor = db.cursor(
                f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name > $1 ORDER BY name LIMIT $2",  # noqa: S608
                after,
                None if limit < 0 else limit,
                prefetch=50,
            )
            async for row in cursor:  # each holds a job template: stop at max_bytes
                out.append(schedule_row(row))
                size += json_size(out[-1].job)
                if max_bytes is not None and size >= max_bytes:
                    break
        return out

    async def due_schedules(self, now: float) -> list[ScheduleRow]:
        rows = await (await self._reads()).fetch(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE enabled AND next_run_at<=$1 ORDER BY next_run_at, name",  # noqa: S608
            now,
        )
        return [schedule_row(r) for r in rows]

    async def next_schedule_at(self) -> float | None:
        value = await (await self._reads()).fetchval("SELECT min(next_run_at) FROM schedules WHERE enabled")
        return float(value) if value is not None else None

    async def delete_schedule(self, name: str) -> bool:
        async def op(db: asyncpg.Connection) -> bool:
            return bool(await db.fetchval("DELETE FROM schedules WHERE name=$1 RETURNING 1", name))

        return await self._write(op)

    async def set_schedule_enabled(self, name: str, enabled: bool, next_run_at: float | None) -> bool:
        async def op(db: asyncpg.Connection) -> bool:
            return bool(
                await db.fetchval(
                    "UPDATE schedules SET enabled=$1, next_run_at=$2, claimed_by=NULL, claimed_until=0 "
                    "WHERE name=$3 RETURNING 1",
                    enabled,
                    next_run_at,
                    name,
                )
            )

        return await self._write(op)

    async def claim_schedule(self, name: str, occurrence: float, node: str, now: float, until: float) -> bool:
        async def op(db: asyncpg.Connection) -> bool:
            # Two nodes claiming at once: the second waits for the first's row lock, then finds
            # the claim taken (or the occurrence recorded, next_run_at moved on).
            return bool(
                await db.fetchval(
                    "UPDATE schedules SET claimed_by=$1, claimed_until=$2 WHERE name=$3 AND enabled "
                    "AND next_run_at=$4 AND (claimed_by IS NULL OR claimed_by=$1 OR claimed_until<$5) RETURNING 1",
                    node,
                    until,
                    name,
                    occurrence,
                    now,
                )
            )

        return await self._write(op)

    def record_schedule_run(
        self, name: str, job_id: str, now: float, next_run_at: float | None, occurrence: float | None = None
    ) -> Awaitable[bool]:
        async def op(db: asyncpg.Connection) -> bool:
            return bool(
                await db.fetchval(
                    "UPDATE schedules SET last_job_id=$1, last_run_at=$2, next_run_at=$3, runs=runs+1, "
                    "last_error_code=NULL, last_error_message=NULL, claimed_by=NULL, claimed_until=0 "
                    "WHERE name=$4 AND ($5::double precision IS NULL OR next_run_at=$5) RETURNING 1",
                    job_id,
                    now,
                    next_run_at,
                    name,
                    occurrence,
                )
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

        async def op(db: asyncpg.Connection) -> bool:
            return bool(
                await db.fetchval(
                    "UPDATE schedules SET next_run_at=$1, skipped_overlaps=skipped_overlaps+$2, "
                    "last_error_code=coalesce($3, last_error_code), "
                    "last_error_message=coalesce($4, last_error_message), claimed_by=NULL, claimed_until=0 "
                    "WHERE name=$5 AND ($6::double precision IS NULL OR next_run_at=$6) RETURNING 1",
                    next_run_at,
                    int(overlap),
                    code,
                    message,
                    name,
                    occurrence,
                )
            )

        return self._write(op)
