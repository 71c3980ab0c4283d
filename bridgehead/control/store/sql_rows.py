"""Rows of the SQL backends (SQLite, PostgreSQL): the column lists their SELECTs read, in
one order, and the rows made from them. One place, so the two backends cannot drift apart;
booleans go through ``bool()`` because SQLite stores them as integers."""

from __future__ import annotations

import json
from typing import Any, Protocol

from bridgehead.control.store.rows import AgentRow, JobRow, ScheduleRow


class Row(Protocol):
    """A row as either driver gives it: a tuple (sqlite3) or an asyncpg ``Record``."""

    def __getitem__(self, index: int, /) -> Any: ...


JOB_COLUMNS = (
    "id, plugin, params, cluster, state, attempt, max_attempts, timeout_s, idempotency_key, sink, agent, "
    "accepted, safe_to_repeat, cancel_requested, error_code, error_message, acked_seq, record_count, "
    "created_at, started_at, finished_at, queue_seq"
)

SCHEDULE_COLUMNS = (
    "name, cron, timezone, job, enabled, next_run_at, last_run_at, last_job_id, runs, skipped_overlaps, "
    "last_error_code, last_error_message, created_at"
)


def job_row(row: Row) -> JobRow:
    return JobRow(
        id=row[0],
        plugin=row[1],
        params=json.loads(row[2]),
        cluster=row[3],
        state=row[4],
        attempt=row[5],
        max_attempts=row[6],
        timeout_s=row[7],
        idempotency_key=row[8],
        sink=json.loads(row[9]) if row[9] else None,
        agent=row[10],
        accepted=bool(row[11]),
        safe_to_repeat=bool(row[12]),
        cancel_requested=bool(row[13]),
        error_code=row[14],
        error_message=row[15],
        acked_seq=row[16],
        record_count=row[17],
        created_at=row[18],
        started_at=row[19],
        finished_at=row[20],
        queue_seq=row[21],
    )


def agent_row(row: Row) -> AgentRow:
    return AgentRow(
        name=row[0],
        cluster=row[1],
        agent_id=row[2],
        public_key=row[3],
        enrolled_at=row[4],
        last_seen=row[5],
        version=row[6],
        plugins=json.loads(row[7]),
        connections=json.loads(row[8]),
        cert_expires_at=row[9],
        revoked_at=row[10],
    )


def schedule_row(row: Row) -> ScheduleRow:
    return ScheduleRow(
        name=row[0],
        cron=row[1],
        timezone=row[2],
        job=json.loads(row[3]),
        enabled=bool(row[4]),
        next_run_at=row[5],
        last_run_at=row[6],
        last_job_id=row[7],
        runs=row[8],
        skipped_overlaps=row[9],
        last_error_code=row[10],
        last_error_message=row[11],
        created_at=row[12],
    )
