"""The agent's journal and disk spool: one SQLite database (WAL) in ``data_dir``.

``jobs`` holds every attempt the agent accepted, written *before* the acceptance is sent
(persist, then ack). ``spool`` holds records that are not yet acknowledged by the control
plane and that either overflowed the in-memory window or belong to a finished attempt
(so that a finished attempt's output survives an agent restart and is re-sent, rather than
the job being run again). Rows leave the spool only when the control plane acknowledges them.

Writes join one open transaction. The connection's writer commits before it sends a frame
that says something is journaled (``accept``, ``complete``), and for an ``accept`` (and
everything of a run not safe to repeat) waits for a flush of the WAL that covers the commit
(``durable_soon``: by default, ``agent.synchronous = "full"``; off the event loop,
``bridgehead.core.wal_sync``), so an acknowledgement survives a power loss; with
``"normal"`` the commit alone (survives a crash of the agent process only). Which frames
wait for the flush, and why a completion of a run safe to repeat does not, is
``bridgehead.agent.outbox``'s. A timer also commits every second, bounding how long spooled
records wait uncommitted. So one commit and one flush serve every job that changed in
between, and nothing is acknowledged before it is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

from bridgehead.core.wal_sync import WalSync
from bridgehead.protocol import ErrorInfo, SyncState, encode
from bridgehead.protocol.messages import JobStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    plugin TEXT NOT NULL,
    state TEXT NOT NULL,               -- running | done
    status TEXT,                       -- succeeded | failed | cancelled, once done
    error BLOB,                        -- ErrorInfo as JSON, once done
    sync_state BLOB,                   -- SyncState as JSON: a sync job's state for its next run
    safe_to_repeat INTEGER,            -- as the plugin said at admission (NULL: before this column)
    next_seq INTEGER NOT NULL DEFAULT 1,
    accepted_at REAL NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
-- Offers accepted here, remembered until they could no longer verify (expiry + clock skew),
-- so a replayed offer is refused even after its job ended and left ``jobs``.
CREATE TABLE IF NOT EXISTS offers_seen (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    forget_after REAL NOT NULL,
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spool (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, attempt, seq)
) WITHOUT ROWID;
"""


@dataclass
class JournaledJob:
    job_id: str
    attempt: int
    plugin: str
    state: str
    status: JobStatus | None
    error: ErrorInfo | None
    next_seq: int
    sync_state: SyncState | None = None
    safe_to_repeat: bool | None = None  # None: journaled before the agent kept it


class Journal:
    def __init__(self, path: Path, durable: bool = True) -> None:
        """``durable``: ``make_durable`` flushes to stable storage (power-loss safe), not only
        commits (process-crash safe)."""
        # SQLite makes -wal and -shm with the database file's mode: set it first (0600).
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{path}{suffix}", 0o600)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        # isolation_level=None: transactions are explicit, so one ``with`` is one commit.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a crash of the agent process (kill -9) without
        # waiting for the disk; ``make_durable`` adds the flush, off the loop and shared.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._wal_sync = WalSync(path) if durable else None
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(jobs)")}
        if "sync_state" not in columns:  # a journal from before sync jobs
            self.db.execute("ALTER TABLE jobs ADD COLUMN sync_state BLOB")
        if "safe_to_repeat" not in columns:  # a journal from before the agent kept it
            self.db.execute("ALTER TABLE jobs ADD COLUMN safe_to_repeat INTEGER")
        self._closed = False
        self._commits = 0  # commits made so far
        self._flushed_at = -1  # ``_commits`` when the last flush was asked for
        self._last_flush: asyncio.Future[None] | None = None
        self._offers_since_prune = 0
        self.db.execute("DELETE FROM offers_seen WHERE forget_after < strftime('%s', 'now')")

    def close(self) -> None:
        """Commit and close. Called with no sync in flight (the writer that awaits
        ``make_durable`` has stopped); the commit itself is flushed by SQLite's checkpoint at
        close, which syncs the WAL and the database."""
        if self._closed:
            return
        self.commit()
        self.db.close()
        if self._wal_sync is not None:
            self._wal_sync.close()
        self._closed = True

    def _begin(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN")

    def commit(self) -> None:
        if self.db.in_transaction:
            self.db.execute("COMMIT")
            self._commits += 1

    async def make_durable(self) -> None:
        """Commit, then return once the commit is on stable storage (persist, then
        acknowledge). Other work of the event loop goes on while the disk flushes."""
        # Shielded: the future may be shared (``durable_soon``), and a cancelled waiter
        # (a cancelled job) must not cancel the flush others wait for.
        await asyncio.shield(self.durable_soon())

    def durable_soon(self) -> asyncio.Future[None]:
        """Commit now; the future resolves once that commit is on stable storage (at once
        with ``synchronous = "normal"``). Unlike ``make_durable`` the caller need not wait:
        it may commit more meanwhile, and the next flush covers that too. With nothing
        committed since the last flush asked for, that flush covers it all: its future is
        returned rather than another flush asked for (a run not safe to repeat waits for
        the flush its accept waits for, not for one more after it)."""
        self.commit()
        if self._wal_sync is None:
            flushed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            flushed.set_result(None)
            return flushed
        last = self._last_flush
        if last is not None and self._flushed_at == self._commits and last.get_loop() is asyncio.get_running_loop():
            return last
        self._flushed_at = self._commits
        self._last_flush = self._wal_sync.flushed()
        return self._last_flush

    def offer_seen(self, job_id: str, attempt: int) -> bool:
        row = self.db.execute("SELECT 1 FROM offers_seen WHERE job_id=? AND attempt=?", (job_id, attempt)).fetchone()
        return row is not None

    def remember_offer(self, job_id: str, attempt: int, forget_after: float, now: float) -> None:
        """Joins the open transaction, so it is durable before the offer's accept is sent."""
        self._begin()
        self.db.execute(
            "INSERT OR REPLACE INTO offers_seen (job_id, attempt, forget_after) VALUES (?, ?, ?)",
            (job_id, attempt, forget_after),
        )
        self._offers_since_prune += 1
        if self._offers_since_prune >= 1000:
            self._offers_since_prune = 0
            self.db.execute("DELETE FROM offers_seen WHERE forget_after < ?", (now,))

    def add_job(self, job_id: str, attempt: int, plugin: str, now: float, safe_to_repeat: bool | None = None) -> None:
        """``safe_to_repeat``: as the plugin said; after a restart the hello reports it with
        the attempt, since its accept may never have reached the control plane."""
        self._begin()
        self.db.execute(
            "INSERT OR REPLACE INTO jobs (job_id, attempt, plugin, state, accepted_at, safe_to_repeat)"
            " VALUES (?, ?, ?, 'running', ?, ?)",
            (job_id, attempt, plugin, now, None if safe_to_repeat is None else int(safe_to_repeat)),
        )

    def finish_job(
        self,
        job_id: str,
        attempt: int,
        status: JobStatus,
        error: ErrorInfo | None,
        next_seq: int,
        unacked: list[tuple[int, bytes]],
        sync_state: SyncState | None = None,
    ) -> int:
        """Mark the attempt done and spool its unacknowledged in-memory records, atomically.

        Returns the bytes newly written to the spool (records spooled before are kept as
        they are and not counted again).
        """
        self._begin()
        added = 0
        for seq, data in unacked:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO spool (job_id, attempt, seq, data) VALUES (?, ?, ?, ?)",
                (job_id, attempt, seq, data),
            )
            if cursor.rowcount == 1:
                added += len(data)
        self.db.execute(
            "UPDATE jobs SET state='done', status=?, error=?, next_seq=?, sync_state=? WHERE job_id=? AND attempt=?",
            (
                status,
                encode(error) if error else None,
                next_seq,
                encode(sync_state) if sync_state else None,
                job_id,
                attempt,
            ),
        )
        return added

    def remove_job(self, job_id: str, attempt: int) -> int:
        """Forget the attempt and its spooled records; return the spool bytes freed."""
        self._begin()
        (freed,) = self.db.execute(
            "SELECT COALESCE(SUM(length(data)), 0) FROM spool WHERE job_id=? AND attempt=?", (job_id, attempt)
        ).fetchone()
        if freed:
            self.db.execute("DELETE FROM spool WHERE job_id=? AND attempt=?", (job_id, attempt))
        self.db.execute("DELETE FROM jobs WHERE job_id=? AND attempt=?", (job_id, attempt))
        return int(freed)

    def jobs(self) -> list[JournaledJob]:
        import msgspec  # local: only read at start

        rows = self.db.execute(
            "SELECT job_id, attempt, plugin, state, status, error, next_seq, sync_state, safe_to_repeat"
            " FROM jobs ORDER BY accepted_at"
        ).fetchall()
        return [
            JournaledJob(
                job_id=r[0],
                attempt=r[1],
                plugin=r[2],
                state=r[3],
                status=r[4],
                error=msgspec.json.decode(r[5], type=ErrorInfo) if r[5] else None,
                next_seq=r[6],
                sync_state=msgspec.json.decode(r[7], type=SyncState) if r[7] else None,
                safe_to_repeat=None if r[8] is None else bool(r[8]),
            )
            for r in rows
        ]

    # --- spool ---------------------------------------------------------------------------

    def spool_put(self, job_id: str, attempt: int, seq: int, data: bytes) -> None:
        self._begin()
        self.db.execute(
            "INSERT OR IGNORE INTO spool (job_id, attempt, seq, data) VALUES (?, ?, ?, ?)",
            (job_id, attempt, seq, data),
        )

    def spool_put_many(self, job_id: str, attempt: int, first_seq: int, records: Sequence[bytes]) -> None:
        """``spool_put`` of consecutive records from ``first_seq``, in one statement."""
        self._begin()
        self.db.executemany(
            "INSERT OR IGNORE INTO spool (job_id, attempt, seq, data) VALUES (?, ?, ?, ?)",
            zip(repeat(job_id), repeat(attempt), itertools.count(first_seq), records),
        )

    def spool_read(self, job_id: str, attempt: int, after: int, limit: int) -> list[tuple[int, bytes]]:
        rows = self.db.execute(
            "SELECT seq, data FROM spool WHERE job_id=? AND attempt=? AND seq>? ORDER BY seq LIMIT ?",
            (job_id, attempt, after, limit),
        ).fetchall()
        return [(int(seq), bytes(data)) for seq, data in rows]

    def spool_trim(self, job_id: str, attempt: int, upto: int) -> int:
        """Delete acknowledged rows; return the bytes freed."""
        self._begin()
        (freed,) = self.db.execute(
            "SELECT COALESCE(SUM(length(data)), 0) FROM spool WHERE job_id=? AND attempt=? AND seq<=?",
            (job_id, attempt, upto),
        ).fetchone()
        if freed:
            self.db.execute("DELETE FROM spool WHERE job_id=? AND attempt=? AND seq<=?", (job_id, attempt, upto))
        return int(freed)

    def spool_bytes(self) -> int:
        (total,) = self.db.execute("SELECT COALESCE(SUM(length(data)), 0) FROM spool").fetchone()
        return int(total)

    def spool_last_seq(self, job_id: str, attempt: int) -> int:
        (last,) = self.db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM spool WHERE job_id=? AND attempt=?", (job_id, attempt)
        ).fetchone()
        return int(last)
