"""The agent journal asks for no flush that would cover nothing new: with nothing committed
since the last flush asked for, that flush's future is shared (a run not safe to repeat then
waits for the flush its accept waits for, not one more after it), and a waiter that is
cancelled (its job was) does not cancel the flush the others wait for."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgehead.agent.journal import Journal


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.db")
    yield j
    j.close()


def count_flushes(journal: Journal) -> list[int]:
    flushes: list[int] = []
    sync = journal._wal_sync
    assert sync is not None, "premise: a durable journal"

    def counted(fd: int) -> None:
        flushes.append(fd)
        os.fdatasync(fd)

    sync._sync_data = counted
    return flushes


async def test_nothing_committed_since_the_last_flush_asked_for_shares_it(journal: Journal) -> None:
    flushes = count_flushes(journal)
    journal.add_job("j1", 1, "ssh", 1.0, False)
    first = journal.durable_soon()
    assert journal.durable_soon() is first, "a second flush was asked for, covering nothing new"
    await journal.make_durable()
    assert first.done() and len(flushes) == 1
    journal.add_job("j2", 1, "ssh", 2.0, False)
    second = journal.durable_soon()
    assert second is not first, "a new commit was left to a flush asked for before it"
    await second
    assert len(flushes) == 2


async def test_a_cancelled_waiter_does_not_cancel_the_shared_flush(journal: Journal) -> None:
    journal.add_job("j1", 1, "ssh", 1.0, False)
    shared = journal.durable_soon()
    waiter = asyncio.ensure_future(journal.make_durable())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await shared  # still resolves: the flush others wait for went on
    assert not shared.cancelled()
