"""The PostgreSQL store's jobs: submission, attempts, the end of a job, requeue and cancel.

Every write about a running attempt is fenced by the attempt *and the node* holding it
(``jobs.node``, this store's ``node_id``): a node that lost an attempt to another (its agent
moved there, or it was declared dead) changes nothing of it. Writes that queue a job signal
``q:CLUSTER`` and writes that end one ``f:JOB`` to the other nodes (``writer``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any

import asyncpg

from bridgehead.control.store.postgres.schema import QUEUE_BLOCK
from bridgehead.control.store.postgres.sinks import queue_delivery_now
from bridgehead.control.store.postgres.syncs import keep_sync_state
from bridgehead.control.store.postgres.writer import GroupCommit
from bridgehead.control.store.rows import JobRow, json_size
from bridgehead.control.store.sql_rows import JOB_COLUMNS, job_row
from bridgehead.protocol import SyncState

_INSERT = (
    "INSERT INTO jobs (queue_seq, id, plugin, params, cluster, state, max_attempts, timeout_s, idempotency_key, "
    "sink, created_at) VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $10)"
)


def _values(job: JobRow) -> tuple[Any, ...]:
    sink = json.dumps(job.sink) if job.sink is not None else None
    return (
        job.queue_seq,
        job.id,
        job.plugin,
        json.dumps(job.params),
        job.cluster,
        job.max_attempts,
        job.timeout_s,
        job.idempotency_key,
        sink,
        job.created_at,
    )


class JobTables(GroupCommit):
    node_id: str
    # Queue positions: [_seq_next, _seq_end) of a block reserved from job_queue_blocks, and the
    # next block once reserved (QUEUE_BLOCK jobs ahead: the reservation is a round trip).
    _seq_next: int
    _seq_end: int
    _spare_block: int | None = None
    _reserving: asyncio.Task[None] | None = None

    def _queue_seq(self) -> int:
        if self._seq_next >= self._seq_end and self._spare_block is not None:
            # Never backwards: a block reserved below where this node counted to (it started
            # past a stored position beyond the sequence) is entered at the count.
            self._seq_next = max(self._spare_block, self._seq_next)
            self._seq_end = self._spare_block + QUEUE_BLOCK
            self._spare_block = None
        seq = self._seq_next
        # Past the block's end before the next is reserved (a million jobs in one round trip):
        # counting on keeps this node's order; only the order between nodes blurs.
        self._seq_next += 1
        if self._seq_end - self._seq_next < QUEUE_BLOCK // 2 and self._spare_block is None and self._reserving is None:
            self._reserving = asyncio.get_running_loop().create_task(self._reserve_block())
        return seq

    async def _reserve_block(self) -> None:
        try:
            pool = await self._reads()
            self._spare_block = int(await pool.fetchval("SELECT nextval('job_queue_blocks')"))
        finally:
            self._reserving = None

    async def create_job(self, job: JobRow) -> tuple[JobRow, bool]:
        job.queue_seq = self._queue_seq()  # a refused insert leaves a gap: harmless

        async def op(db: asyncpg.Connection) -> JobRow | None:
            # ON CONFLICT: a key in use refuses this insert alone, not the commit it shares (a
            # taken id is a fault, and fails the commit).
            inserted = await db.fetchval(
                _INSERT + " ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1", *_values(job)
            )
            if inserted or job.idempotency_key is None:
                return None
            row = await db.fetchrow(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key=$1",  # noqa: S608 - fixed column list
                job.idempotency_key,
            )
            return job_row(row) if row is not None else None

        existing = await self._write(op, signal=f"q:{job.cluster}")
        if existing is not None:
            return existing, False
        return job, True

    def insert_job(self, job: JobRow) -> Awaitable[None]:
        if job.idempotency_key is not None:
            raise ValueError("a job with an idempotency key goes through create_job")
        job.queue_seq = self._queue_seq()
        values = _values(job)

        async def op(db: asyncpg.Connection) -> None:
            await db.execute(_INSERT, *values)

        return self._write(op, signal=f"q:{job.cluster}")

    async def get_job(self, job_id: str) -> JobRow | None:
        row = await (await self._reads()).fetchrow(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id=$1",  # noqa: S608 - fixed column list
            job_id,
        )
        return job_row(row) if row else None

    async def list_jobs(
        self, state: str | None, cluster: str | None, limit: int, before: str | None, max_bytes: int | None = None
    ) -> list[JobRow]:
        where: list[str] = []
        args: list[Any] = []
        if state:
            args.append(state)
            where.append(f"state=${len(args)}")
        if cluster:
            args.append(cluster)
            where.append(f"cluster=${len(args)}")
        if before:
            args.append(before)
            where.append(f"queue_seq < (SELECT queue_seq FROM jobs WHERE id=${len(args)})")  # noqa: S608 - a placeholder
        sql = f"SELECT {JOB_COLUMNS} FROM jobs"  # noqa: S608 - only fixed fragments are joined
        if where:
            sql += " WHERE " + " AND ".join(where)
        args.append(max(limit, 0))
        sql += f" ORDER BY queue_seq DESC LIMIT ${len(args)}"
        out: list[JobRow] = []
        size = 0
        async with (await self._reads()).acquire() as db, db.transaction():
            # A cursor, row by row: a page of large params stops at max_bytes.
            async for row in db.cursor(sql, *args, prefetch=min(max(limit, 1), 50)):
                job = job_row(row)
                out.append(job)
                size += json_size(job.params) + json_size(job.sink)
                if max_bytes is not None and size >= max_bytes:
                    break
        return out

    async def jobs_in_state(self, state: str) -> list[JobRow]:
        rows = await (await self._reads()).fetch(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state=$1 ORDER BY queue_seq",  # noqa: S608 - fixed column list
            state,
        )
        return [job_row(r) for r in rows]

    def start_attempt(self, job_id: str, attempt: int, agent: str, now: float) -> Awaitable[None]:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute(
                "UPDATE jobs SET state='running', attempt=$1, agent=$2, accepted=false, safe_to_repeat=false, "
                "acked_seq=0, record_count=0, started_at=$3, node=$5 WHERE id=$4",
                attempt,
                agent,
                now,
                job_id,
                self.node_id,
            )
            if attempt > 1:
                await db.execute("DELETE FROM record_batches WHERE job_id=$1 AND attempt<$2", job_id, attempt)

        return self._write(op, quiet=True)

    def mark_accepted(self, job_id: str, attempt: int, safe_to_repeat: bool) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute(
                "UPDATE jobs SET accepted=true, safe_to_repeat=$1 WHERE id=$2 AND attempt=$3 AND node=$4",
                safe_to_repeat,
                job_id,
                attempt,
                self.node_id,
            )

        return self._write(op, quiet=True)

    def finish_job(
        self,
        job_id: str,
        attempt: int,
        state: str,
        error_code: str | None,
        error_message: str | None,
        record_count: int,
        now: float,
        sync_state: SyncState | None = None,
    ) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> bool:
            # A queued job (no node) is ended by whichever node cancels it; a claim racing
            # with that changes its attempt first, or finds it ended: the row decides.
            ended = await db.fetchval(
                "UPDATE jobs SET state=$1, error_code=$2, error_message=$3, record_count=$4, finished_at=$5 "
                "WHERE id=$6 AND attempt=$7 AND (node=$8 OR (node IS NULL AND state='queued')) "
                "AND state IN ('queued', 'running') RETURNING 1",
                state,
                error_code,
                error_message,
                record_count,
                now,
                job_id,
                attempt,
                self.node_id,
            )
            if not ended:
                return False  # a stale attempt's end (fenced): it keeps no sync state either
            if sync_state is not None and state == "succeeded":
                await keep_sync_state(db, sync_state, job_id, now)
            if state == "succeeded":
                await queue_delivery_now(db, job_id, attempt, now)  # in the same commit: never lost
            return True

        return self._write(op, signal=f"f:{job_id}")

    def requeue_job(
        self, job_id: str, error_code: str | None, error_message: str | None, not_before: float | None = None
    ) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> str | None:
            cluster: str | None = await db.fetchval(
                "UPDATE jobs SET state='queued', agent=NULL, node=NULL, accepted=false, error_code=$1, "
                "error_message=$2, not_before=$5 WHERE id=$3 AND node=$4 AND state='running' RETURNING cluster",
                error_code,
                error_message,
                job_id,
                self.node_id,
                not_before,
            )
            return cluster

        # The signal names no cluster (it is read in the commit): other nodes poll every queue
        # they serve on a bare ``q:``; a retry is rare beside submissions.
        return self._write(op, signal="q:")

    def request_cancel(self, job_id: str) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute("UPDATE jobs SET cancel_requested=true WHERE id=$1", job_id)

        return self._write(op, signal=f"c:{job_id}")
