"""The embedded store: one SQLite database in WAL mode in the control plane's data dir.

Calls run on the event loop thread rather than in a worker thread: each statement here takes
microseconds, less than a thread hop costs, and one connection used from one thread needs no
locking. Large record batches are the exception worth watching (bench/ measures them).

Writes are *group-committed*: every write issued during one turn of the event loop joins one
transaction, committed at the end of that turn, and each caller's ``await`` returns only after
the commit. Under load one commit serves many jobs; alone, a write waits for no one. Writes
that may fail on a constraint run under a savepoint, so their failure does not undo the
others.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import itertools
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from bridgehead.control.store.base import (
    Actor,
    AgentRow,
    ApiTokenRow,
    AuditRow,
    EnrollmentGrant,
    EnrollmentRefused,
    JobRow,
    Store,
    SyncSummary,
    json_size,
)
from bridgehead.control.store.schedules import SCHEDULE_SCHEMA, ScheduleTables
from bridgehead.control.store.sinks import SINK_SCHEMA, SinkTables
from bridgehead.protocol import SyncState

log = logging.getLogger("bridgehead.control.store")

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    queue_seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    plugin TEXT NOT NULL,
    params TEXT NOT NULL,
    cluster TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout_s REAL NOT NULL,
    idempotency_key TEXT UNIQUE,
    sink TEXT,
    agent TEXT,
    accepted INTEGER NOT NULL DEFAULT 0,
    safe_to_repeat INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error_code TEXT,
    error_message TEXT,
    acked_seq INTEGER NOT NULL DEFAULT 0,
    record_count INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, queue_seq);
-- Records are stored as the batches they arrive in (one row per records message): a row per
-- record cost ~3 us of index upkeep each, the most expensive step of a million-row query.
-- ``sizes`` holds each record's length (uint32 little-endian); ``data`` their concatenation.
CREATE TABLE IF NOT EXISTS record_batches (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    sizes BLOB NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, attempt, last_seq)
);
-- Each named sync's state for its next run (bridgehead.protocol.SyncState); ``version`` counts
-- the runs that replaced it, so a run that started from an older state cannot overwrite it.
CREATE TABLE IF NOT EXISTS sync_states (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    watermark TEXT,
    ids BLOB NOT NULL,
    job_id TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS agents (
    name TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    enrolled_at REAL NOT NULL,
    last_seen REAL,
    version TEXT NOT NULL DEFAULT '',
    plugins TEXT NOT NULL DEFAULT '[]',
    connections TEXT NOT NULL DEFAULT '[]',
    cert_expires_at REAL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_hash TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    last_used_at REAL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS enrollment_tokens (
    token_hash TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    expires_at REAL NOT NULL,
    created_at REAL NOT NULL,
    used_at REAL,
    used_by TEXT,
    uses_left INTEGER NOT NULL DEFAULT 1,
    replace_name TEXT
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    actor_name TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT ''
);
"""

_JOB_COLUMNS = (
    "id, plugin, params, cluster, state, attempt, max_attempts, timeout_s, idempotency_key, sink, agent, "
    "accepted, safe_to_repeat, cancel_requested, error_code, error_message, acked_seq, record_count, "
    "created_at, started_at, finished_at, queue_seq"
)


def _job(row: tuple[Any, ...]) -> JobRow:
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


def _agent(row: tuple[Any, ...]) -> AgentRow:
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


# Columns added after 0.1; a data dir made by 0.1 gets them on open.
_ADDED_COLUMNS = (
    ("agents", "cert_expires_at", "REAL"),
    ("agents", "revoked_at", "REAL"),
    ("enrollment_tokens", "uses_left", "INTEGER NOT NULL DEFAULT 1"),
    ("enrollment_tokens", "replace_name", "TEXT"),
    ("api_tokens", "expires_at", "REAL"),
    ("api_tokens", "last_used_at", "REAL"),
    ("api_tokens", "revoked_at", "REAL"),
    ("audit", "actor_name", "TEXT NOT NULL DEFAULT ''"),
    ("audit", "address", "TEXT NOT NULL DEFAULT ''"),
)

# A token's public id: the start of its hash (48 bits; the secret cannot be derived from it).
TOKEN_ID_CHARS = 12
_TOKEN_COLUMNS = "substr(token_hash, 1, 12), name, role, created_at, expires_at, last_used_at, revoked_at"  # noqa: S105 - column names
_encode_json = msgspec.json.Encoder().encode
_AUDIT_SQL = "INSERT INTO audit (at, actor, actor_name, address, action, detail) VALUES (?, ?, ?, ?, ?, ?)"


def private_database(path: Path) -> None:
    """The database and its -wal and -shm files 0600 whatever they were; SQLite makes the
    latter two with the database's mode, so this runs before it is opened."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def pack_sizes(sizes: Sequence[int]) -> bytes:
    packed = array.array("I", sizes)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def unpack_sizes(blob: bytes) -> array.array[int]:
    sizes = array.array("I")
    sizes.frombytes(blob)
    if sys.byteorder == "big":
        sizes.byteswap()
    return sizes


class SqliteStore(SinkTables, ScheduleTables, Store):
    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.path = path
        private_database(path)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: every commit survives a crash of this process (kill -9); FULL also survives
        # power loss at the cost of an fsync per commit (config: store.synchronous).
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.execute("PRAGMA foreign_keys=OFF")
        self.db.executescript(SCHEMA)
        self.db.executescript(SINK_SCHEMA)
        self.db.executescript(SCHEDULE_SCHEMA)
        self._migrate_record_rows()
        for table, column, kind in _ADDED_COLUMNS:
            if column not in {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any], bool]] = []
        self._flush_scheduled = False
        # Queue positions are handed out here, not by AUTOINCREMENT, so a job has its place
        # before its insert runs (insert_job); past the highest ever used, as AUTOINCREMENT.
        (used,) = self.db.execute(
            "SELECT MAX(n) FROM (SELECT MAX(queue_seq) AS n FROM jobs "
            "UNION ALL SELECT seq FROM sqlite_sequence WHERE name='jobs')"
        ).fetchone()
        self._queue_seq = itertools.count((used or 0) + 1)

    def _migrate_record_rows(self) -> None:
        """Data dirs of 0.1 development builds kept a row per record: move them into batches."""
        exists = self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='records'").fetchone()
        if not exists:
            return
        self.db.execute("BEGIN IMMEDIATE")
        rows = self.db.execute("SELECT job_id, attempt, seq, data FROM records ORDER BY job_id, attempt, seq")
        self.db.executemany(
            "INSERT OR IGNORE INTO record_batches (job_id, attempt, last_seq, first_seq, sizes, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            ((j, a, s, s, pack_sizes([len(d)]), bytes(d)) for j, a, s, d in rows.fetchall()),
        )
        self.db.execute("DROP TABLE records")
        self.db.execute("COMMIT")

    async def close(self) -> None:
        if self._pending:
            self._flush()
        self.db.close()

    def _write(self, op: Callable[[], T], isolated: bool = False) -> asyncio.Future[T]:
        """Queue ``op`` for this turn's transaction; the future resolves after the commit.

        ``isolated`` ops run under a savepoint, so their expected failure (a constraint) is
        theirs alone; any other failing op fails the whole batch, which the dispatcher
        treats as fatal.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((op, future, isolated))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            # IMMEDIATE takes the write lock up front, so a CLI writing tokens meanwhile waits
            # (busy_timeout) instead of failing the upgrade from a read lock.
            self.db.execute("BEGIN IMMEDIATE")
            for op, future, isolated in batch:
                if not isolated:
                    outcomes.append((future, op(), None))
                    continue
                self.db.execute("SAVEPOINT op")
                try:
                    result = op()
                except sqlite3.IntegrityError as exc:
                    self.db.execute("ROLLBACK TO op")
                    outcomes.append((future, None, exc))
                else:
                    outcomes.append((future, result, None))
                self.db.execute("RELEASE op")
            self.db.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - every caller of the batch learns of it
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            outcomes = [(future, None, exc) for _op, future, _isolated in batch]
        for future, result, error in outcomes:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    # --- jobs ----------------------------------------------------------------------------

    async def create_job(self, job: JobRow) -> tuple[JobRow, bool]:
        job.queue_seq = next(self._queue_seq)  # a refused insert leaves a gap: harmless
        try:
            await self._write(lambda: self._insert_job(job), isolated=True)
        except sqlite3.IntegrityError:
            if job.idempotency_key is None:
                raise
            row = self.db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE idempotency_key=?",  # noqa: S608 - fixed column list
                (job.idempotency_key,),
            ).fetchone()
            if row is None:
                raise
            return _job(row), False
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
        row = self.db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()  # noqa: S608
        return _job(row) if row else None

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
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs"  # noqa: S608 - only fixed fragments are joined
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY queue_seq DESC LIMIT ?"
        out: list[JobRow] = []
        size = 0
        cursor = self.db.execute(sql, (*args, limit))
        for row in cursor:  # row by row: a page of large params stops at max_bytes
            job = _job(row)
            out.append(job)
            size += json_size(job.params) + json_size(job.sink)
            if max_bytes is not None and size >= max_bytes:
                cursor.close()
                break
        return out

    async def jobs_in_state(self, state: str) -> list[JobRow]:
        rows = self.db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state=? ORDER BY queue_seq",  # noqa: S608 - fixed column list
            (state,),
        ).fetchall()
        return [_job(r) for r in rows]

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

    def append_records(self, job_id: str, attempt: int, first_seq: int, records: Sequence[bytes]) -> Awaitable[None]:
        last_seq = first_seq + len(records) - 1
        sizes = pack_sizes([len(data) for data in records])
        data = b"".join(records)

        def op() -> None:
            # The dispatcher passes only records past the attempt's acked_seq, so batches never
            # overlap; OR IGNORE keeps a replayed one (same last_seq) from failing the commit.
            self.db.execute(
                "INSERT OR IGNORE INTO record_batches (job_id, attempt, last_seq, first_seq, sizes, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, attempt, last_seq, first_seq, sizes, data),
            )
            self.db.execute(
                "UPDATE jobs SET acked_seq=MAX(acked_seq, ?) WHERE id=? AND attempt=?",
                (last_seq, job_id, attempt),
            )

        return self._write(op)

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
            self.db.execute(
                "UPDATE jobs SET state=?, error_code=?, error_message=?, record_count=?, finished_at=? "
                "WHERE id=? AND attempt=?",
                (state, error_code, error_message, record_count, now, job_id, attempt),
            )
            if sync_state is not None and state == "succeeded":
                self._keep_sync_state(sync_state, job_id, now)
            if state == "succeeded":
                self.queue_delivery(job_id, attempt, now)  # in the same commit: never lost

        return self._write(op)

    def _keep_sync_state(self, state: SyncState, job_id: str, now: float) -> None:
        values = (state.version + 1, state.watermark, state.ids, job_id, now, state.name, state.version)
        updated = self.db.execute(
            "UPDATE sync_states SET version=?, watermark=?, ids=?, job_id=?, updated_at=? WHERE name=? AND version=?",
            values,
        ).rowcount
        if not updated and state.version == 0:
            updated = self.db.execute(
                "INSERT OR IGNORE INTO sync_states (version, watermark, ids, job_id, updated_at, name) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                values[:-1],
            ).rowcount
        if not updated:
            log.warning(
                "sync %r: job %s started from state version %d, which another run has replaced; "
                "its records stand, its state is not kept",
                state.name,
                job_id,
                state.version,
            )

    def sync_state(self, name: str) -> SyncState | None:
        row = self.db.execute("SELECT version, watermark, ids FROM sync_states WHERE name=?", (name,)).fetchone()
        if row is None:
            return None
        return SyncState(name=name, version=row[0], watermark=row[1], ids=bytes(row[2]))

    async def sync_states(self, after: str = "", limit: int = -1) -> list[SyncSummary]:
        rows = self.db.execute(
            "SELECT name, version, watermark, length(ids), job_id, updated_at FROM sync_states WHERE name > ? "
            "ORDER BY name LIMIT ?",
            (after, limit),
        ).fetchall()
        return [SyncSummary(r[0], r[1], r[2], r[3] // 16, r[4], r[5]) for r in rows]

    def delete_sync_state(self, name: str) -> Awaitable[Any]:
        return self._write(lambda: self.db.execute("DELETE FROM sync_states WHERE name=?", (name,)))

    def requeue_job(self, job_id: str, error_code: str | None, error_message: str | None) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute(
                "UPDATE jobs SET state='queued', agent=NULL, accepted=0, error_code=?, error_message=? WHERE id=?",
                (error_code, error_message, job_id),
            )
        )

    def request_cancel(self, job_id: str) -> Awaitable[Any]:
        return self._write(lambda: self.db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,)))

    async def records(
        self, job_id: str, attempt: int, after: int, limit: int, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        cap = max_bytes if max_bytes is not None else sys.maxsize
        out: list[tuple[int, bytes]] = []
        total = 0
        # The sizes come first, without the data; then only the slice of each batch that the
        # page takes is read (blob I/O), so a page never costs more memory than itself.
        cursor = self.db.execute(
            "SELECT rowid, first_seq, sizes FROM record_batches WHERE job_id=? AND attempt=? AND last_seq>? "
            "ORDER BY last_seq",
            (job_id, attempt, after),
        )
        try:
            for rowid, first_seq, sizes in cursor:
                offset = start = 0
                taken: list[tuple[int, int]] = []
                full = False
                for seq, size in enumerate(unpack_sizes(sizes), first_seq):
                    if seq <= after:
                        offset += size
                        start = offset
                        continue
                    if len(out) + len(taken) >= limit or (total + size > cap and (out or taken)):
                        full = True
                        break
                    taken.append((seq, size))
                    total += size
                    offset += size
                if taken:
                    with self.db.blobopen("record_batches", "data", rowid, readonly=True) as blob:
                        blob.seek(start)
                        data = blob.read(offset - start)
                    position = 0
                    for seq, size in taken:
                        out.append((seq, data[position : position + size]))
                        position += size
                if full or len(out) >= limit:
                    break
        finally:
            cursor.close()
        return out

    # --- agents and credentials -----------------------------------------------------------

    async def enroll_agent(self, grant: EnrollmentGrant, now: float) -> AgentRow | EnrollmentRefused:
        agent = grant.agent

        def op() -> AgentRow | EnrollmentRefused:
            row = self.db.execute(
                "SELECT cluster, expires_at, uses_left, replace_name FROM enrollment_tokens WHERE token_hash=?",
                (grant.token_hash,),
            ).fetchone()
            if row is None:
                return EnrollmentRefused(401, "invalid_token", "unknown enrolment token")
            cluster, expires_at, uses_left, replace_name = row
            if uses_left <= 0:
                return EnrollmentRefused(401, "invalid_token", "enrolment token used up; create a new one")
            if expires_at <= now:
                return EnrollmentRefused(401, "invalid_token", "enrolment token expired; create a new one")
            if cluster != agent.cluster:
                return EnrollmentRefused(
                    403, "wrong_cluster", f"this token enrols into cluster {cluster!r}, not {agent.cluster!r}"
                )
            existing = self.db.execute("SELECT cluster, revoked_at FROM agents WHERE name=?", (agent.name,)).fetchone()
            if existing is not None and existing[1] is None and replace_name != agent.name:
                return EnrollmentRefused(
                    409,
                    "agent_exists",
                    f"agent {agent.name!r} is enrolled already (cluster {existing[0]!r}): choose another name, or "
                    f"have an admin revoke it ('bridgehead-control agent revoke {agent.name}') or make a token "
                    f"with '--replace {agent.name}'",
                )
            self.db.execute(
                "UPDATE enrollment_tokens SET uses_left=uses_left-1, used_at=?, used_by=? WHERE token_hash=?",
                (now, agent.name, grant.token_hash),
            )
            self.db.execute(
                "INSERT INTO agents (name, cluster, agent_id, public_key, enrolled_at, cert_expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET cluster=excluded.cluster, "
                "agent_id=excluded.agent_id, public_key=excluded.public_key, enrolled_at=excluded.enrolled_at, "
                "cert_expires_at=excluded.cert_expires_at, revoked_at=NULL",
                (agent.name, agent.cluster, agent.agent_id, agent.public_key, now, agent.cert_expires_at),
            )
            action = "agent.replace" if existing is not None else "bridgehead.agent.enroll"
            actor = Actor("enrollment-token", address=grant.address)
            self._audit_now(actor, action, {"agent": agent.name, "cluster": agent.cluster}, now)
            return agent

        return await self._write(op, isolated=True)

    def set_agent_certificate(self, name: str, expires_at: float) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute("UPDATE agents SET cert_expires_at=? WHERE name=?", (expires_at, name))
        )

    async def revoke_agent(self, name: str, actor: Actor, now: float) -> bool:
        def op() -> bool:
            cursor = self.db.execute("UPDATE agents SET revoked_at=? WHERE name=? AND revoked_at IS NULL", (now, name))
            if cursor.rowcount:
                self._audit_now(actor, "agent.revoke", {"agent": name}, now)
            return cursor.rowcount == 1

        return await self._write(op)

    async def revoked_agents(self, since: float) -> list[str]:
        rows = self.db.execute("SELECT name FROM agents WHERE revoked_at >= ?", (since,)).fetchall()
        return [str(r[0]) for r in rows]

    async def get_agent(self, name: str) -> AgentRow | None:
        row = self.db.execute("SELECT * FROM agents WHERE name=?", (name,)).fetchone()
        return _agent(row) if row else None

    async def list_agents(self, after: str = "", limit: int = -1) -> list[AgentRow]:
        rows = self.db.execute("SELECT * FROM agents WHERE name > ? ORDER BY name LIMIT ?", (after, limit))
        return [_agent(r) for r in rows.fetchall()]

    def agent_seen(
        self, name: str, now: float, version: str, plugins: list[dict[str, Any]], connections: list[str]
    ) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute(
                "UPDATE agents SET last_seen=?, version=?, plugins=?, connections=? WHERE name=?",
                (now, version, json.dumps(plugins), json.dumps(connections), name),
            )
        )

    def add_api_token(
        self, token_hash: str, role: str, name: str, now: float, expires_at: float | None = None
    ) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute(
                "INSERT INTO api_tokens (token_hash, role, name, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (token_hash, role, name, now, expires_at),
            )
        )

    async def api_token(self, token_hash: str) -> ApiTokenRow | None:
        row = self.db.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_hash=?",  # noqa: S608 - fixed column list
            (token_hash,),
        ).fetchone()
        return ApiTokenRow(*row) if row else None

    async def api_tokens(self) -> list[ApiTokenRow]:
        rows = self.db.execute(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at").fetchall()  # noqa: S608
        return [ApiTokenRow(*row) for row in rows]

    async def revoke_api_token(self, token_id: str, now: float) -> ApiTokenRow | None:
        if len(token_id) != TOKEN_ID_CHARS:
            return None

        def op() -> ApiTokenRow | None:
            # The id is a prefix of the hash: a range over the primary key finds it.
            row = self.db.execute(
                f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_hash >= ? AND token_hash < ? "  # noqa: S608
                "AND revoked_at IS NULL",
                (token_id, token_id + "g"),
            ).fetchone()
            if row is None:
                return None
            self.db.execute(
                "UPDATE api_tokens SET revoked_at=? WHERE token_hash >= ? AND token_hash < ? AND revoked_at IS NULL",
                (now, token_id, token_id + "g"),
            )
            token = ApiTokenRow(*row)
            token.revoked_at = now
            return token

        return await self._write(op)

    def api_token_used(self, token_id: str, now: float) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute(
                "UPDATE api_tokens SET last_used_at=? WHERE token_hash >= ? AND token_hash < ?",
                (now, token_id, token_id + "g"),
            )
        )

    def external_changes(self) -> int:
        # Changes when another connection (another process) commits; never for our own writes.
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def add_enrollment_token(
        self, token_hash: str, cluster: str, expires_at: float, now: float, uses: int = 1, replace: str | None = None
    ) -> Awaitable[Any]:
        return self._write(
            lambda: self.db.execute(
                "INSERT INTO enrollment_tokens (token_hash, cluster, expires_at, created_at, uses_left, replace_name) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (token_hash, cluster, expires_at, now, uses, replace),
            )
        )

    def _audit_now(self, actor: Actor, action: str, detail: dict[str, Any], now: float) -> None:
        text = _encode_json(detail).decode()  # msgspec: a job submit's entry costs a few microseconds
        self.db.execute(_AUDIT_SQL, (now, actor.id, actor.name, actor.address, action, text))

    def audit(self, actor: Actor, action: str, detail: dict[str, Any], now: float) -> Awaitable[Any]:
        return self._write(lambda: self._audit_now(actor, action, detail, now))

    async def audit_log(
        self,
        after: int,
        limit: int,
        actor: str | None = None,
        action: str | None = None,
        since: float | None = None,
        until: float | None = None,
        max_bytes: int | None = None,
    ) -> list[AuditRow]:
        where: list[str] = ["id > ?"]
        args: list[Any] = [after]
        if actor is not None:
            where.append("(actor = ? OR actor_name = ?)")
            args += [actor, actor]
        if action is not None:
            where.append("action = ?")
            args.append(action)
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if until is not None:
            where.append("at < ?")
            args.append(until)
        cursor = self.db.execute(
            "SELECT id, at, actor, actor_name, address, action, detail FROM audit WHERE "  # noqa: S608 - fixed fragments
            + " AND ".join(where)
            + " ORDER BY id LIMIT ?",
            (*args, limit),
        )
        out: list[AuditRow] = []
        size = 0
        for r in cursor:  # a schedule's entry holds its job template: stop at max_bytes
            out.append(AuditRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])))
            size += json_size(out[-1].detail)
            if max_bytes is not None and size >= max_bytes:
                cursor.close()
                break
        return out
