"""The PostgreSQL store's sink deliveries, finished batches, rejected records and rotated OAuth
refresh tokens (the contract: ``store.deliveries``). ``seq`` numbers deliveries in the order
they were queued."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Sequence
from typing import Any

import asyncpg

from bridgehead.control.store.postgres.writer import GroupCommit
from bridgehead.control.store.rows import COUNTS, Delivery, Rejected

_DELIVERY = "job_id, instance, state, batch_size, total, error_code, error_message, started_at, finished_at"


async def queue_delivery_now(db: asyncpg.Connection, job_id: str, attempt: int, now: float) -> bool:
    """Inside the running transaction: the pending delivery of a succeeded job with a sink
    (``finish_job`` calls it in the commit that ends the job). False if there is nothing to
    queue or it is queued already."""
    queued = await db.fetchval(
        "INSERT INTO sink_deliveries (job_id, instance, state, batch_size, total, started_at, updated_at) "
        "SELECT id, coalesce(sink::jsonb ->> 'servicenow', ''), 'pending', 0, record_count, $1, $1 FROM jobs "
        "WHERE id=$2 AND attempt=$3 AND state='succeeded' AND sink IS NOT NULL ON CONFLICT DO NOTHING RETURNING 1",
        now,
        job_id,
        attempt,
    )
    return bool(queued)


class SinkTables(GroupCommit):
    def queue_delivery(self, job_id: str, attempt: int, now: float) -> Awaitable[bool]:
        return self._write(lambda db: queue_delivery_now(db, job_id, attempt, now))

    async def deliveries_to_run(self, limit: int, node: str, now: float) -> list[str]:
        rows = await (await self._reads()).fetch(
            "SELECT job_id FROM sink_deliveries WHERE state IN ('pending', 'delivering') "
            "AND (node IS NULL OR node=$2 OR lease_until<$3) ORDER BY seq LIMIT $1",
            max(limit, 0),
            node,
            now,
        )
        return [r[0] for r in rows]

    async def start_delivery(
        self, job_id: str, batch_size: int, now: float, node: str, until: float
    ) -> Delivery | None:
        async def op(db: asyncpg.Connection) -> asyncpg.Record | None:
            # The claim and the start in one statement: of two nodes claiming at once, the
            # second waits for the first's row lock, then finds the lease taken.
            # The batch size is fixed the first time, for good: a resumed delivery cuts the same batches.
            return await db.fetchrow(
                "UPDATE sink_deliveries SET started_at = CASE WHEN batch_size = 0 THEN $1 ELSE started_at END, "  # noqa: S608 - fixed column list
                "batch_size = CASE WHEN batch_size = 0 THEN $2 ELSE batch_size END, "
                "state='delivering', error_code=NULL, error_message=NULL, updated_at=$1, node=$4, lease_until=$5 "
                "WHERE job_id=$3 AND state IN ('pending', 'delivering') "
                "AND (node IS NULL OR node=$4 OR lease_until<$1) "
                f"RETURNING {_DELIVERY}",
                now,
                batch_size,
                job_id,
                node,
                until,
            )

        row = await self._write(op)
        return Delivery(*row) if row is not None else None

    async def renew_deliveries(self, node: str, job_ids: Sequence[str], until: float) -> set[str]:
        async def op(db: asyncpg.Connection) -> list[asyncpg.Record]:
            return await db.fetch(
                "UPDATE sink_deliveries SET lease_until=$1 WHERE job_id = ANY($2::text[]) AND node=$3 "
                "AND state='delivering' RETURNING job_id",
                until,
                list(job_ids),
                node,
            )

        return {r[0] for r in await self._write(op)} if job_ids else set()

    async def delivery(self, job_id: str) -> Delivery | None:
        row = await (await self._reads()).fetchrow(
            f"SELECT {_DELIVERY} FROM sink_deliveries WHERE job_id=$1",  # noqa: S608 - fixed column list
            job_id,
        )
        return Delivery(*row) if row else None

    async def delivered_batches(self, job_id: str) -> set[int]:
        rows = await (await self._reads()).fetch("SELECT first_seq FROM sink_batches WHERE job_id=$1", job_id)
        return {r[0] for r in rows}

    def finish_batch(
        self,
        job_id: str,
        first_seq: int,
        last_seq: int,
        counts: dict[str, int],
        rejected: Sequence[Rejected],
        now: float,
        node: str,
    ) -> Awaitable[bool]:
        async def op(db: asyncpg.Connection) -> bool:
            # Fenced in the same statement: the batch is written only while ``node`` holds
            # the delivery, and the delivery's row stays locked to the commit (a node claiming
            # it meanwhile waits, then reads a cursor with this batch in it).
            written = await db.fetchval(
                "WITH held AS (UPDATE sink_deliveries SET updated_at=$9 WHERE job_id=$1 AND node=$10 "
                "AND state='delivering' RETURNING job_id) "
                "INSERT INTO sink_batches (job_id, first_seq, last_seq, inserted, updated, ignored, skipped, errors) "
                "SELECT job_id, $2, $3, $4, $5, $6, $7, $8 FROM held ON CONFLICT (job_id, first_seq) DO UPDATE SET "
                "last_seq=excluded.last_seq, inserted=excluded.inserted, updated=excluded.updated, "
                "ignored=excluded.ignored, skipped=excluded.skipped, errors=excluded.errors RETURNING 1",
                job_id,
                first_seq,
                last_seq,
                *(counts.get(c, 0) for c in COUNTS),
                now,
                node,
            )
            if written and rejected:
                await db.executemany(
                    "INSERT INTO sink_errors (job_id, seq, status, message, record) VALUES ($1, $2, $3, $4, $5) "
                    "ON CONFLICT (job_id, seq) DO UPDATE SET status=excluded.status, message=excluded.message, "
                    "record=excluded.record",
                    [(job_id, r.seq, r.status, r.message, json.dumps(r.record)) for r in rejected],
                )
            return bool(written)

        return self._write(op)

    def end_delivery(
        self, job_id: str, state: str, error_code: str | None, error_message: str | None, now: float, node: str
    ) -> Awaitable[bool]:
        finished = now if state in ("done", "failed") else None

        async def op(db: asyncpg.Connection) -> bool:
            return bool(
                await db.fetchval(
                    "UPDATE sink_deliveries SET state=$1, error_code=$2, error_message=$3, updated_at=$4, "
                    "finished_at=$5, node=NULL, lease_until=0 WHERE job_id=$6 AND node=$7 RETURNING 1",
                    state,
                    error_code,
                    error_message,
                    now,
                    finished,
                    job_id,
                    node,
                )
            )

        return self._write(op)

    def retry_delivery(self, job_id: str, now: float) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute(
                "UPDATE sink_deliveries SET state='pending', error_code=NULL, error_message=NULL, updated_at=$1, "
                "finished_at=NULL WHERE job_id=$2 AND state='failed'",
                now,
                job_id,
            )

        return self._write(op)

    async def delivery_counts(self, job_id: str) -> dict[str, int]:
        row = await (await self._reads()).fetchrow(
            "SELECT coalesce(sum(inserted),0), coalesce(sum(updated),0), coalesce(sum(ignored),0), "
            "coalesce(sum(skipped),0), coalesce(sum(errors),0), coalesce(sum(last_seq - first_seq + 1),0) "
            "FROM sink_batches WHERE job_id=$1",
            job_id,
        )
        assert row is not None  # noqa: S101 - an aggregate always has its row
        values = [int(v) for v in row]
        return {**dict(zip(COUNTS, values[:5], strict=True)), "delivered": values[5]}

    async def rejected_count(self, job_id: str) -> int:
        return int(await (await self._reads()).fetchval("SELECT count(*) FROM sink_errors WHERE job_id=$1", job_id))

    async def rejected(self, job_id: str, after: int, limit: int) -> list[Rejected]:
        rows = await (await self._reads()).fetch(
            "SELECT seq, status, message, record FROM sink_errors WHERE job_id=$1 AND seq>$2 ORDER BY seq LIMIT $3",
            job_id,
            after,
            max(limit, 0),
        )
        return [Rejected(seq, status, message, json.loads(record)) for seq, status, message, record in rows]

    async def delivery_finished(self, job_id: str) -> bool:
        row = await (await self._reads()).fetchrow(
            "SELECT j.state, j.sink IS NOT NULL, d.state FROM jobs j LEFT JOIN sink_deliveries d ON d.job_id = j.id "
            "WHERE j.id=$1",
            job_id,
        )
        if row is None:
            return True
        job_state, has_sink, delivery_state = row
        if not has_sink or job_state in ("failed", "cancelled"):
            return job_state in ("succeeded", "failed", "cancelled")
        return bool(job_state == "succeeded" and delivery_state in ("done", "failed"))

    # --- OAuth refresh tokens ------------------------------------------------------------

    async def refresh_token(self, instance: str) -> tuple[str, str] | None:
        row = await (await self._reads()).fetchrow(
            "SELECT refresh_token, origin FROM oauth_tokens WHERE instance=$1", instance
        )
        return (row[0], row[1]) if row else None

    def keep_refresh_token(self, instance: str, token: str, origin: str, now: float) -> Awaitable[Any]:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute(
                "INSERT INTO oauth_tokens (instance, refresh_token, origin, updated_at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (instance) DO UPDATE SET refresh_token=excluded.refresh_token, "
                "origin=excluded.origin, updated_at=excluded.updated_at",
                instance,
                token,
                origin,
                now,
            )

        return self._write(op)
