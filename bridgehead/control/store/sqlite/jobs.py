"""The SQLite store's jobs: submission, attempts, the end of a job, requeue and cancel."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from collections.abc import Awaitable, Iterator
from typing import Any

from bridgehead.control.store.rows import JobRow, json_size
from bridgehead.control.store.sql_rows import JOB_COLUMNS, job_row
from bridgehead.control.store.sqlite.sinks import queue_delivery_now
from bridgehead.control.store.sqlite.syncs import keep_sync_state
from bridgehead.control.store.sqlite.writer import GroupCommit
from bridgehead.protocol import SyncState


def queue_positions(db: sqlite3.Connection) -> Iterator[int]:
    """Queue positions are handed out here, not by AUTOINCREMENT, so a job has its place before
    its insert runs (insert_job); past the highest ever used, as AUTOINCREMENT. An in-process
    counter is enough because one process owns the file while it serves (the CLI submits no
    jobs); a store shared by several nodes takes them from a sequence instead."""
    (used,) = db.execute(
        "SELECT MAX(n) FROM (SELECT MAX(queue_seq) AS n FROM jobs "
        "UNION ALL SELECT seq FROM sqlite_sequence WHERE name='jobs')"
    ).fetchone()
    return itertools.count((used or 0) + 1)


class JobTables(GroupCommit):
    _queue_seq: Iterator[int]

    async def create_job(self, job: JobRow) -> tuple[JobRow, bool]:
        job.queue_seq = next(self._queue_seq)  # a refused insert leaves a gap: harmless
        try:
            await self._write(lambda: self._insert_job(job), isolated=True)
        except sqlite3.IntegrityError:
            if job.idempotency_key is None:
                raise
            row = self.db.execute(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key=?",  # noqa: S608 - fixed column list
                (job.idempotency_key,),
            ).fetchone()
            if row is None:
                raise
            return job_row(row), False
        return job, True

    def insert_job(self, job: JobRow) -> asyncio.Future[None]:
        if job.idempotency_key is not None:
            raise ValueError("a job with an idempotency key goes through create_job")
        job.queue_seq = next(self._queue_seq)
        # Not isolated: with no key, nothing but a fault can refuse it, and a fault fails the
        # whole commit, the job's first attempt with it.
        return self._write(lambda: self._insert_job(job))

    def _insert_job(self, job: JobRow) -> None:
        self.db.execute(
            "INSERT INTO jobs (queue_seq, id, plugin, params, cluster, state, max_attempts, timeout_s, "
            "idempotency_key, sink, created_at) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
            (
                job.queue_seq,
                job.id,
                job.plugin,
                json.dumps(job.params),
                job.cluster,
                job.max_attempts,
                job.timeout_s,
                job.idempotency_key,
                json.dumps(job.sink) if job.sink is not None else None,
                job.created_at,
            ),
        )

    async def get_job(self, job_id: str) -> JobRow | None:
        row = self.db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()  # noqa: S608
        return job_row(row) if row else None

    async def list_jobs(
        self, state: str | None, cluster: str | None, limit: int, before: str | None, max_bytes: int | None = None
    ) -> list[JobRow]:
        where, args = [], []
        if state:
            where.append("state=?")
            args.append(state)
        if cluster:
            where.append("cluster=?")
            args.append(cluster)
        if before:
            where.append("queue_seq < (SELECT queue_seq FROM jobs WHERE id=?)")
            args.append(before)
        sql = f"SELECT {JOB_COLUMNS} FROM jobs"  # noqa: S608 - only fixed fragments are joined
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY queue_seq DESC LIMIT ?"
        out: list[JobRow] = []
        size = 0
        cursor = self.db.execute(sql, (*args, limit))
        for row in cursor:  # row by row: a page of large params stops at max_bytes
            job = job_row(row)
            out.append(job)
            size += json_size(job.params) + json_size(job.sink)
            if max_bytes is not None and size >= max_bytes:
                cursor.close()
                break
        return out

    async def jobs_in_state(self, state: str) -> list[JobRow]:
        rows = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state=? ORDER BY queue_seq",  # noqa: S608 - fixed column list
            (state,),
        ).fetchall()
        return [job_row(r) for r in rows]

    def start_attempt(self, job_id: str, attempt: int, agent: str, now: float) -> Awaitable[None]:
        def op() -> None:
            self.db.execute(
                "UPDATE jobs SET state='running', attempt=?, agent=?, accepted=0, safe_to_repeat=0, "
                "acked_seq=0, record_count=0, started_at=? WHERE id=?",
                (attempt, agent, now, job_id),
            )
            if attempt > 1:
                self.db.execute("DELETE FROM record_batches WHERE job_id=? AND attempt<?", (job_id, attempt))

        return self._write(op)

    def mark_accepted(self, job_id: str, attempt: int, safe_to_repeat: bool) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute(
                "UPDATE jobs SET accepted=1, safe_to_repeat=? WHERE id=? AND attempt=?",
                (int(safe_to_repeat), job_id, attempt),
            )
        )

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
        def op() -> None:
            ended = self.db.execute(
                "UPDATE jobs SET state=?, error_code=?, error_message=?, record_count=?, finished_at=? "
                "WHERE id=? AND attempt=?",
                (state, error_code, error_message, record_count, now, job_id, attempt),
            ).rowcount
            if not ended:
                return  # a stale attempt's end (fenced): it keeps no sync state either
            if sync_state is not None and state == "succeeded":
                keep_sync_state(self.db, sync_state, job_id, now)
            if state == "succeeded":
                queue_delivery_now(self.db, job_id, attempt, now)  # in the same commit: never lost

        return self._write(op)

    def requeue_job(
        self, job_id: str, error_code: str | None, error_message: str | None, not_before: float | None = None
    ) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute(
                "UPDATE jobs SET state='queued', agent=NULL, accepted=0, error_code=?, error_message=? WHERE id=?",
                (error_code, error_message, job_id),
            )
        )

    def request_cancel(self, job_id: str) -> Awaitable[Any]:
        return self._write(lambda: self.db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,)))
