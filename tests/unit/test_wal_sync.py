"""WalSync, the group flush behind every acknowledgement: a waiter is released only by a flush
that began after it asked (so the flush covers its commit), one flush serves everyone who asked
while the previous one ran, and a failed flush fails everyone, for good."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bridgehead.core.wal_sync import WalSync


class GatedFlush:
    """A flush that waits for the test's word, counting the flushes that began."""

    def __init__(self, fail: bool = False) -> None:
        self.began = 0
        self.gate = threading.Semaphore(0)
        self.fail = fail

    def __call__(self, fd: int) -> None:
        self.began += 1
        os.fstat(fd)  # the descriptor is real and open
        self.gate.acquire(timeout=5)  # bounded: a test that fails must not leave a thread behind
        if self.fail:
            raise OSError(5, "Input/output error")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Path]:
    """An SQLite database in WAL mode with a commit in its -wal file, kept open (the last
    connection to close would checkpoint and remove the -wal)."""
    path = tmp_path / "x.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    assert Path(f"{path}-wal").exists()
    yield path
    db.close()


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.001)


async def test_a_waiter_that_arrives_during_a_flush_waits_for_the_next_one(database: Path) -> None:
    flush = GatedFlush()
    wal = WalSync(database, flush)
    first = wal.flushed()
    await until(lambda: flush.began == 1)
    second = wal.flushed()  # its commit is not covered by the flush in flight
    third = wal.flushed()
    flush.gate.release()
    await asyncio.wait_for(first, 5)
    await until(lambda: flush.began == 2)
    assert not second.done() and not third.done(), "released by a flush that began before they asked"
    flush.gate.release()
    await asyncio.wait_for(asyncio.gather(second, third), 5)
    assert flush.began == 2, "one flush serves everyone who asked meanwhile"
    await wal.aclose()


async def test_a_failed_flush_fails_every_waiter_and_every_later_one(database: Path) -> None:
    flush = GatedFlush(fail=True)
    wal = WalSync(database, flush)
    first = wal.flushed()
    await until(lambda: flush.began == 1)
    second = wal.flushed()
    flush.gate.release()
    for waiter in (first, second):
        with pytest.raises(OSError, match="Input/output error"):
            await asyncio.wait_for(waiter, 5)
    # Never retried (after a failed fsync the data may be gone): a later waiter fails at once.
    with pytest.raises(OSError, match="Input/output error"):
        await asyncio.wait_for(wal.flushed(), 1)
    assert flush.began == 1
    await wal.aclose()


async def test_the_real_flush_returns_and_close_waits_for_it(database: Path) -> None:
    wal = WalSync(database)
    await asyncio.wait_for(wal.flushed(), 10)
    await wal.aclose()
