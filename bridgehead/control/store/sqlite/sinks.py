"""What the SQLite store keeps for sinks: each job's delivery, its finished batches, the
records the instance rejected, and rotated OAuth refresh tokens.

The delivery cursor is the set of finished batches (``sink_batches``), each written in one
commit with its counts and rejected records. After a restart, delivery resumes with the
batches not in it; a batch that was in flight when the control plane died is sent again,
which the sink's coalesce keys make harmless. Counts are sums over finished batches, so a
batch sent twice is counted once.

Deliveries are claimed with a lease as on PostgreSQL (``store.deliveries``), but the leases
live with the store, not in the file: one control-plane process drives a data dir's
deliveries, so after a restart none is held by anyone, which is the truth.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Sequence
from typing import Any

from bridgehead.control.store.rows import COUNTS, Delivery, Rejected
from bridgehead.control.store.sqlite.writer import GroupCommit
from bridgehead.core.wal_sync import WalSync

SINK_SCHEMA = """
CREATE TABLE IF NOT EXISTS sink_deliveries (
    job_id TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    -- pending (not started), delivering, done, failed (resumes on POST .../sync/retry)
    state TEXT NOT NULL,
    batch_size INTEGER NOT NULL,
    total INTEGER NOT NULL,
    error_code TEXT,
    error_message TEXT,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS sink_deliveries_state ON sink_deliveries (state);
CREATE TABLE IF NOT EXISTS sink_batches (
    job_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    inserted INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    ignored INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    PRIMARY KEY (job_id, first_seq)
);
CREATE TABLE IF NOT EXISTS sink_errors (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
-- The newest refresh token per instance (oauth_refresh_token), written the moment the
-- instance rotates it; ``origin`` is a hash of the configured token it descends from, so a
-- new configured token (re-authorisation) replaces the chain.
CREATE TABLE IF NOT EXISTS oauth_tokens (
    instance TEXT PRIMARY KEY,
    refresh_token TEXT NOT NULL,
    origin TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


def queue_delivery_now(db: sqlite3.Connection, job_id: str, attempt: int, now: float) -> bool:
    """Inside the running transaction: the pending delivery of a succeeded job with a sink.

    ``finish_job`` calls this in the commit that ends a job as succeeded, so no succeeded job
    is ever left undelivered. False if there is nothing to queue (no sink, another attempt,
    not succeeded) or the delivery is queued already.
    """
    return bool(
        db.execute(
            "INSERT OR IGNORE INTO sink_deliveries (job_id, instance, state, batch_size, total, started_at, "
            "updated_at) SELECT id, COALESCE(json_extract(sink, '$.servicenow'), ''), 'pending', 0, record_count, "
            "?, ? FROM jobs WHERE id=? AND attempt=? AND state='succeeded' AND sink IS NOT NULL",
            (now, now, job_id, attempt),
        ).rowcount
    )


class SinkTables(GroupCommit):
    def __init__(self, db: sqlite3.Connection, wal_sync: WalSync | None = None) -> None:
        super().__init__(db, wal_sync)
        self._leases: dict[str, tuple[str, float]] = {}  # job id: (node, until)

    def _claimable(self, job_id: str, node: str, now: float) -> bool:
        holder, until = self._leases.get(job_id, (node, 0.0))
        return holder == node or until < now

    def _holds(self, job_id: str, node: str) -> bool:
        return self._leases.get(job_id, ("", 0.0))[0] == node

    # --- deliveries ----------------------------------------------------------------------

    def queue_delivery(self, job_id: str, attempt: int, now: float) -> Awaitable[bool]:
        return self._write(lambda: queue_delivery_now(self.db, job_id, attempt, now))

    async def deliveries_to_run(self, limit: int, node: str, now: float) -> list[str]:
        """Deliveries pending, or cut short (still ``delivering``) and not held by another node."""
        rows = self.db.execute(
            "SELECT job_id FROM sink_deliveries WHERE state IN ('pending', 'delivering') ORDER BY rowid"
        ).fetchall()
        return [r[0] for r in rows if self._claimable(r[0], node, now)][: max(limit, 0)]

    async def start_delivery(
        self, job_id: str, batch_size: int, now: float, node: str, until: float
    ) -> Delivery | None:
        """The queued delivery (``queue_delivery``), claimed and started: its batch size is
        fixed the first time, for good (so a resumed delivery cuts the same batches, whatever
        the configuration says by then)."""

        def op() -> bool:
            if not self._claimable(job_id, node, now):
                return False
            claimed = self.db.execute(
                "UPDATE sink_deliveries SET started_at = CASE WHEN batch_size = 0 THEN ? ELSE started_at END, "
                "batch_size = CASE WHEN batch_size = 0 THEN ? ELSE batch_size END, "
                "state='delivering', error_code=NULL, error_message=NULL, updated_at=? "
                "WHERE job_id=? AND state IN ('pending', 'delivering')",
                (now, batch_size, now, job_id),
            ).rowcount
            if claimed:
                self._leases[job_id] = (node, until)
            return bool(claimed)

        if not await self._write(op):
            return None
        return await self.delivery(job_id)

    async def renew_deliveries(self, node: str, job_ids: Sequence[str], until: float) -> set[str]:
        held = {job_id for job_id in job_ids if self._holds(job_id, node)}
        for job_id in held:
            self._leases[job_id] = (node, until)
        return held

    async def delivery(self, job_id: str) -> Delivery | None:
        row = self.db.execute(
            "SELECT job_id, instance, state, batch_size, total, error_code, error_message, started_at, finished_at "
            "FROM sink_deliveries WHERE job_id=?",
            (job_id,),
        ).fetchone()
        return Delivery(*row) if row else None

    async def delivered_batches(self, job_id: str) -> set[int]:
        rows = self.db.execute("SELECT first_seq FROM sink_batches WHERE job_id=?", (job_id,))
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
        """One batch's outcome, counts and rejected records in one commit: the cursor moves."""

        def op() -> bool:
            if not self._holds(job_id, node):
                return False
            self.db.execute(
                "INSERT OR REPLACE INTO sink_batches (job_id, first_seq, last_seq, inserted, updated, ignored, "
                "skipped, errors) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, first_seq, last_seq, *(counts.get(c, 0) for c in COUNTS)),
            )
            self.db.executemany(
                "INSERT OR REPLACE INTO sink_errors (job_id, seq, status, message, record) VALUES (?, ?, ?, ?, ?)",
                [(job_id, r.seq, r.status, r.message, json.dumps(r.record)) for r in rejected],
            )
            self.db.execute("UPDATE sink_deliveries SET updated_at=? WHERE job_id=?", (now, job_id))
            return True

        return self._write(op)

    def end_delivery(
        self, job_id: str, state: str, error_code: str | None, error_message: str | None, now: float, node: str
    ) -> Awaitable[bool]:
        def op() -> bool:
            if not self._holds(job_id, node):
                return False
            del self._leases[job_id]
            self.db.execute(
                "UPDATE sink_deliveries SET state=?, error_code=?, error_message=?, updated_at=?, finished_at=? "
                "WHERE job_id=?",
                (state, error_code, error_message, now, now if state in ("done", "failed") else None, job_id),
            )
            return True

        return self._write(op)

    def retry_delivery(self, job_id: str, now: float) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute(
                "UPDATE sink_deliveries SET state='pending', error_code=NULL, error_message=NULL, updated_at=?, "
                "finished_at=NULL WHERE job_id=? AND state='failed'",
                (now, job_id),
            )
        )

    async def delivery_counts(self, job_id: str) -> dict[str, int]:
        row = self.db.execute(
            "SELECT COALESCE(SUM(inserted),0), COALESCE(SUM(updated),0), COALESCE(SUM(ignored),0), "
            "COALESCE(SUM(skipped),0), COALESCE(SUM(errors),0), COALESCE(SUM(last_seq - first_seq + 1),0) "
            "FROM sink_batches WHERE job_id=?",
            (job_id,),
        ).fetchone()
        return {**dict(zip(COUNTS, row[:5], strict=True)), "delivered": row[5]}

    async def rejected_count(self, job_id: str) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM sink_errors WHERE job_id=?", (job_id,)).fetchone()
        return int(row[0])

    async def rejected(self, job_id: str, after: int, limit: int) -> list[Rejected]:
        rows = self.db.execute(
            "SELECT seq, status, message, record FROM sink_errors WHERE job_id=? AND seq>? ORDER BY seq LIMIT ?",
            (job_id, after, limit),
        )
        return [Rejected(seq, status, message, json.loads(record)) for seq, status, message, record in rows]

    async def delivery_finished(self, job_id: str) -> bool:
        """For schedules: the job's run is over, delivery included (or it has none to do)."""
        row = self.db.execute(
            "SELECT j.state, j.sink IS NOT NULL, d.state FROM jobs j LEFT JOIN sink_deliveries d ON d.job_id = j.id "
            "WHERE j.id=?",
            (job_id,),
        ).fetchone()
        if row is None:
            return True
        job_state, has_sink, delivery_state = row
        if not has_sink or job_state in ("failed", "cancelled"):
            return job_state in ("succeeded", "failed", "cancelled")
        return job_state == "succeeded" and delivery_state in ("done", "failed")

    # --- OAuth refresh tokens ------------------------------------------------------------

    async def refresh_token(self, instance: str) -> tuple[str, str] | None:
        """``(token, origin)`` of the newest refresh token kept for ``instance``."""
        row = self.db.execute("SELECT refresh_token, origin FROM oauth_tokens WHERE instance=?", (instance,)).fetchone()
        return (row[0], row[1]) if row else None

    def keep_refresh_token(self, instance: str, token: str, origin: str, now: float) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute(
                "INSERT OR REPLACE INTO oauth_tokens (instance, refresh_token, origin, updated_at) VALUES (?, ?, ?, ?)",
                (instance, token, origin, now),
            )
        )
