"""Records are stored as batches; reading them back must give each record once, in order."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bridgehead.control.store.sqlite import SqliteStore


def _records(n: int, start: int = 1) -> list[bytes]:
    return [b'{"n":%d}' % i for i in range(start, start + n)]


async def test_pages_cut_across_batches(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    try:
        await store.append_records("j1", 1, 1, _records(3))
        await store.append_records("j1", 1, 4, _records(1, 4))
        await store.append_records("j1", 1, 5, _records(5, 5))
        await store.append_records("j2", 1, 1, _records(2, 100))  # another job: never mixed in
        everything = await store.records("j1", 1, 0, 100)
        assert everything == [(i, b'{"n":%d}' % i) for i in range(1, 10)]
        assert await store.records("j1", 1, 2, 3) == [(3, b'{"n":3}'), (4, b'{"n":4}'), (5, b'{"n":5}')]
        assert await store.records("j1", 1, 6, 1) == [(7, b'{"n":7}')]
        assert await store.records("j1", 1, 9, 10) == []
        assert await store.records("j1", 2, 0, 10) == []
        # A replayed batch (same attempt and last record) is ignored, not stored twice.
        await store.append_records("j1", 1, 5, _records(5, 5))
        assert len(await store.records("j1", 1, 0, 100)) == 9
    finally:
        await store.close()


async def test_old_row_per_record_table_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE records (job_id TEXT NOT NULL, attempt INTEGER NOT NULL, seq INTEGER NOT NULL, "
        "data BLOB NOT NULL, PRIMARY KEY (job_id, attempt, seq)) WITHOUT ROWID"
    )
    db.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", [("j", 1, i, b'{"n":%d}' % i) for i in (1, 2, 3)])
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        assert await store.records("j", 1, 1, 10) == [(2, b'{"n":2}'), (3, b'{"n":3}')]
        tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "records" not in tables
    finally:
        await store.close()
