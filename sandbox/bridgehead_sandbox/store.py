"""The sandbox's tables: held in memory, persisted to SQLite (WAL) in the data dir.

Why both: every read (queries, coalesce lookups, pages) is served from memory, so a query is a
loop over Python dicts and a coalesce lookup is a dict hit; SQLite only makes the data survive
a restart, and is read once, at start. The sandbox is a stand-in sized for tests and demos
(``limits.max_records``, one million by default, about 1 KB of memory each).

Indexes: a table builds a dict index on a tuple of fields the first time something asks for it
(a transform map's coalesce fields, or a query's ``field=value``), in one O(n) pass, and keeps
it current on every write after that; a lookup is then O(1) however large the table. Nothing
about indexes is stored: they are rebuilt lazily after a restart.

Writes go through :meth:`Store.transaction`: one SQLite transaction per request (a batch of
200 import rows is one commit), applied to memory as it goes. All of it runs on the event
loop's thread with no ``await`` inside, so requests never interleave within a transaction;
a commit in WAL mode with ``synchronous=NORMAL`` does not wait for an fsync. If a
transaction fails, SQLite rolls back and memory is reloaded from the file, so the two never
disagree.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import msgspec

from bridgehead.core.errors import ConfigError
from bridgehead_sandbox.errors import SnError
from bridgehead_sandbox.query import Query
from bridgehead_sandbox.records import SYS_FIELDS

DB_FILE = "sandbox.db"
LOCK_FILE = "sandbox.lock"
MAX_QUERY_INDEXES = 16  # per table; beyond this a query on a new field scans (coalesce always indexes)

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,          -- creation order: the default order of a list
    tbl TEXT NOT NULL,
    sys_id TEXT NOT NULL,             -- not indexed: lookups are served from memory
    data BLOB NOT NULL                -- the record as a JSON object of strings
);
CREATE TABLE IF NOT EXISTS tables (name TEXT PRIMARY KEY, created_on TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS oauth_tokens (
    hash TEXT PRIMARY KEY,            -- sha256 of the token; the token itself is not kept
    kind TEXT NOT NULL,               -- access | refresh
    client_id TEXT NOT NULL,
    username TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

Record = dict[str, str]
Key = tuple[str, ...]
_decode = msgspec.json.Decoder(dict[str, str]).decode
_encode = msgspec.json.Encoder().encode


class Table:
    """One table's records in creation order, its columns, and its indexes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: dict[str, Record] = {}
        self.seq: dict[str, int] = {}
        # An ordered set: every field any record ever had, as an instance's schema would
        # have them (a record lacking one reads as "").
        self.columns: dict[str, None] = dict.fromkeys(SYS_FIELDS)
        self._indexes: dict[Key, dict[Key, list[str]]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, sys_id: str) -> Record | None:
        return self.rows.get(sys_id)

    def find(self, fields: Key, key: Key) -> Record | None:
        """The oldest record whose ``fields`` equal ``key`` (a coalesce match)."""
        ids = self._index(fields).get(key)
        if not ids:
            return None
        return self.rows[min(ids, key=self.seq.__getitem__)] if len(ids) > 1 else self.rows[ids[0]]

    def select(self, query: Query) -> list[Record]:
        """The records matching ``query``, in creation order (ORDER BY is the caller's)."""
        predicate = query.predicate()
        eq = query.equality_on()
        if eq is not None and ((eq.field,) in self._indexes or len(self._indexes) < MAX_QUERY_INDEXES):
            ids = self._index((eq.field,)).get((eq.value,), [])
            candidates = [self.rows[i] for i in sorted(ids, key=self.seq.__getitem__)]
            return [r for r in candidates if predicate(r)]
        return [r for r in self.rows.values() if predicate(r)]

    def _index(self, fields: Key) -> dict[Key, list[str]]:
        index = self._indexes.get(fields)
        if index is None:
            index = {}
            for sys_id, record in self.rows.items():
                index.setdefault(tuple(record.get(f, "") for f in fields), []).append(sys_id)
            self._indexes[fields] = index
        return index

    # --- changes, made only through a Writer so that SQLite sees them too ------------------

    def _put(self, record: Record, seq: int) -> None:
        sys_id = record["sys_id"]
        self.rows[sys_id] = record
        self.seq[sys_id] = seq
        if not self.columns.keys() >= record.keys():
            self.columns.update((name, None) for name in record if name not in self.columns)
        for fields, index in self._indexes.items():
            index.setdefault(tuple(record.get(f, "") for f in fields), []).append(sys_id)

    def _replace(self, record: Record) -> None:
        sys_id = record["sys_id"]
        old = self.rows[sys_id]
        self.rows[sys_id] = record
        if not self.columns.keys() >= record.keys():
            self.columns.update((name, None) for name in record if name not in self.columns)
        for fields, index in self._indexes.items():
            old_key = tuple(old.get(f, "") for f in fields)
            new_key = tuple(record.get(f, "") for f in fields)
            if old_key != new_key:
                _unindex(index, old_key, sys_id)
                index.setdefault(new_key, []).append(sys_id)

    def _remove(self, sys_id: str) -> None:
        old = self.rows.pop(sys_id)
        del self.seq[sys_id]
        for fields, index in self._indexes.items():
            _unindex(index, tuple(old.get(f, "") for f in fields), sys_id)


def _unindex(index: dict[Key, list[str]], key: Key, sys_id: str) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.remove(sys_id)
        if not ids:
            del index[key]


class Writer:
    """The changes of one transaction (see :meth:`Store.transaction`).

    Memory changes at once; SQLite gets each touched row's final state when the transaction
    ends, one ``executemany`` per kind of change: rows are addressed by ``seq`` (the rowid),
    so an insert appends to the end of the file's one B-tree and nothing else is indexed.
    """

    def __init__(self, store: Store, now: str) -> None:
        self._store = store
        self._db = store.db
        self.now = now
        self._inserted: dict[int, tuple[str, Record]] = {}
        self._updated: dict[int, Record] = {}
        self._deleted: list[int] = []

    def table(self, name: str) -> Table:
        """The table, created on first write as an instance would not (and the sandbox does)."""
        table = self._store.tables.get(name)
        if table is None:
            self._db.execute("INSERT INTO tables (name, created_on) VALUES (?, ?)", (name, self.now))
            table = self._store.tables[name] = Table(name)
        return table

    def insert(self, table: Table, record: Record) -> None:
        store = self._store
        if store.total >= store.max_records:
            raise SnError(
                400,
                "Operation Failed",
                f"the sandbox holds its maximum of {store.max_records} records (limits.max_records)",
            )
        store.last_seq += 1
        table._put(record, store.last_seq)
        store.total += 1
        self._inserted[store.last_seq] = (table.name, record)

    def update(self, table: Table, record: Record) -> None:
        table._replace(record)
        seq = table.seq[record["sys_id"]]
        if seq in self._inserted:
            self._inserted[seq] = (table.name, record)
        else:
            self._updated[seq] = record

    def delete(self, table: Table, sys_id: str) -> None:
        seq = table.seq[sys_id]
        table._remove(sys_id)
        self._store.total -= 1
        if self._inserted.pop(seq, None) is None:
            self._updated.pop(seq, None)
            self._deleted.append(seq)

    def next_number(self, counter: str, first: int) -> int:
        """The next value of a named counter (import set numbers), starting at ``first``."""
        row = self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
            (counter, first),
        ).fetchone()
        return int(row[0])

    def _flush(self) -> None:
        db = self._db
        if self._inserted:
            db.executemany(
                "INSERT INTO records (seq, tbl, sys_id, data) VALUES (?, ?, ?, ?)",
                [(seq, name, r["sys_id"], _encode(r)) for seq, (name, r) in self._inserted.items()],
            )
        if self._updated:
            db.executemany(
                "UPDATE records SET data = ? WHERE seq = ?", [(_encode(r), seq) for seq, r in self._updated.items()]
            )
        if self._deleted:
            db.executemany("DELETE FROM records WHERE seq = ?", [(seq,) for seq in self._deleted])


class Store:
    def __init__(self, data_dir: Path, *, synchronous: str = "NORMAL", max_records: int = 1_000_000) -> None:
        self.data_dir = data_dir
        self.max_records = max_records
        self.tables: dict[str, Table] = {}
        self.total = 0
        self.last_seq = 0
        self._lock = lock_data_dir(data_dir)
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) and
            # token writes outside one commit at once.
            self.db = sqlite3.connect(data_dir / DB_FILE, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if synchronous.upper() == 'FULL' else 'NORMAL'}")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(str(data_dir / DB_FILE), "", f"cannot open the sandbox database: {exc}") from None
        self._load()

    def _load(self) -> None:
        self.tables = {name: Table(name) for (name,) in self.db.execute("SELECT name FROM tables")}
        self.total = 0
        self.last_seq = 0
        for seq, name, data in self.db.execute("SELECT seq, tbl, data FROM records ORDER BY seq"):
            table = self.tables.get(name) or self.tables.setdefault(name, Table(name))
            table._put(_decode(data), seq)
            self.total += 1
            self.last_seq = seq

    @contextlib.contextmanager
    def transaction(self, now: str) -> Iterator[Writer]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            writer = Writer(self, now)
            yield writer
            writer._flush()
            self.db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # a failed COMMIT may have ended it already
                self.db.execute("ROLLBACK")
            self._load()  # memory took the changes as they came; take them back
            raise

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)

    def clear(self) -> None:
        """Delete every table and record (``POST /sandbox/reset`` with ``data``)."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM records")
        self.db.execute("DELETE FROM tables")
        self.db.execute("DELETE FROM counters")
        self.db.execute("COMMIT")
        self._load()

    # --- OAuth tokens (hashes only), so that a token outlives a restart as on an instance ---

    def tokens(self) -> list[tuple[str, str, str, str, float]]:
        return list(self.db.execute("SELECT hash, kind, client_id, username, expires_at FROM oauth_tokens"))

    def put_token(self, token_hash: str, kind: str, client_id: str, username: str, expires_at: float) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO oauth_tokens VALUES (?, ?, ?, ?, ?)",
            (token_hash, kind, client_id, username, expires_at),
        )

    def drop_tokens(self, hashes: list[str]) -> None:
        self.db.executemany("DELETE FROM oauth_tokens WHERE hash = ?", [(h,) for h in hashes])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()
        self._lock.close()


def lock_data_dir(data_dir: Path) -> IO[bytes]:
    """Hold the data dir for this process: two sandboxes on one dir would each trust their
    own copy in memory and overwrite each other's changes."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(data_dir / LOCK_FILE, "ab")  # noqa: SIM115 - held open for the process's life
    except OSError as exc:
        raise ConfigError("--data-dir", "", f"cannot use {data_dir}: {exc.strerror}") from None
    if sys.platform != "win32":
        import fcntl

        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise ConfigError("--data-dir", "", f"{data_dir} is in use by another bridgehead-sandbox") from None
    return handle
