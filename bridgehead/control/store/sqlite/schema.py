"""The SQLite store's tables, and opening a data dir's database (any version since 0.1).

Schema versions are numbered, kept in the database's ``PRAGMA user_version`` (SQLite's own
slot for it, in the file's header) and run on open: the missing ones in order, and a
database newer than ``LATEST`` is refused (``SchemaTooNew``). Version 1 is the schema as
every open made it before versions were kept (``CREATE TABLE IF NOT EXISTS``, the record
rows of 0.1 moved into batches, ``_ADDED_COLUMNS``): it is idempotent, so it brings a new
database or an existing one of any release since 0.1 (user_version 0) to version 1 without
losing a row. Later changes are new entries of ``_MIGRATIONS``, never edits of version 1.
The sink, schedule and release tables are declared next to their code (``sinks.py``,
``schedules.py``, ``releases.py``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from bridgehead.control.store.sqlite.records import pack_sizes
from bridgehead.control.store.sqlite.releases import RELEASE_SCHEMA
from bridgehead.control.store.sqlite.schedules import SCHEDULE_SCHEMA
from bridgehead.control.store.sqlite.sinks import SINK_SCHEMA
from bridgehead.control.store.versions import SchemaTooNew

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


def private_database(path: Path) -> None:
    """The database and its -wal and -shm files 0600 whatever they were; SQLite makes the
    latter two with the database's mode, so this runs before it is opened."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def open_database(path: Path) -> sqlite3.Connection:
    """The data dir's database, private, in WAL mode, its tables made or brought up to date."""
    private_database(path)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a commit survives a crash of this process (kill -9) without waiting for the
    # disk; the store's writer adds the flush that makes it survive a power loss, off the
    # event loop and shared by concurrent commits (writer.GroupCommit, core.wal_sync).
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.execute("PRAGMA foreign_keys=OFF")
    try:
        migrate(db, str(path))
    except BaseException:
        db.close()
        raise
    return db


def _version_1(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)
    db.executescript(SINK_SCHEMA)
    db.executescript(SCHEDULE_SCHEMA)
    db.executescript(RELEASE_SCHEMA)
    _migrate_record_rows(db)
    for table, column, kind in _ADDED_COLUMNS:
        if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


# Version N is _MIGRATIONS[N - 1]; append, never edit one that has shipped.
_MIGRATIONS = (_version_1,)
LATEST = len(_MIGRATIONS)


def migrate(db: sqlite3.Connection, where: str) -> int:
    """Bring ``db`` to ``LATEST``; the version it was at (0: new, or older than versions)."""
    (found,) = db.execute("PRAGMA user_version").fetchone()
    if found > LATEST:
        raise SchemaTooNew(where, found, LATEST)
    for version in range(found + 1, LATEST + 1):
        _MIGRATIONS[version - 1](db)
        db.execute(f"PRAGMA user_version = {version}")  # an int from range(): nothing to quote
    return int(found)


def _migrate_record_rows(db: sqlite3.Connection) -> None:
    """Data dirs of 0.1 development builds kept a row per record: move them into batches."""
    exists = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='records'").fetchone()
    if not exists:
        return
    db.execute("BEGIN IMMEDIATE")
    rows = db.execute("SELECT job_id, attempt, seq, data FROM records ORDER BY job_id, attempt, seq")
    db.executemany(
        "INSERT OR IGNORE INTO record_batches (job_id, attempt, last_seq, first_seq, sizes, data) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        ((j, a, s, s, pack_sizes([len(d)]), bytes(d)) for j, a, s, d in rows.fetchall()),
    )
    db.execute("DROP TABLE records")
    db.execute("COMMIT")
