"""Jobs get their queue position from the store before their insert runs (so a job and its
first attempt can share one commit); positions must stay unique and increasing across keyed
and unkeyed jobs, refused inserts and a reopened store, or a restart would reorder the queue."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from bridgehead.control.store.base import JobRow
from bridgehead.control.store.sqlite import SqliteStore


def _job(job_id: str, key: str | None = None) -> JobRow:
    return JobRow(
        id=job_id,
        plugin="echo",
        params={},
        cluster="default",
        max_attempts=1,
        timeout_s=60,
        idempotency_key=key,
        created_at=time.time(),
    )


async def test_positions_increase_across_kinds_refusals_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    try:
        first = _job("a")
        second = _job("b")
        # Both inserts in one commit; the positions are known before it.
        pending = [store.insert_job(first), store.insert_job(second)]
        assert (first.queue_seq, second.queue_seq) == (1, 2)
        for write in pending:
            await write
        keyed, created = await store.create_job(_job("c", key="k"))
        again, created_again = await store.create_job(_job("d", key="k"))  # refused: the same job back
        assert (created, created_again, again.id, again.queue_seq) == (True, False, "c", keyed.queue_seq)
        fourth = _job("e")
        await store.insert_job(fourth)
        assert first.queue_seq < second.queue_seq < keyed.queue_seq < fourth.queue_seq
        with pytest.raises(ValueError, match="idempotency key"):
            store.insert_job(_job("f", key="other"))
    finally:
        await store.close()
    # A row deleted at the end must not give its position away after a reopen (AUTOINCREMENT's
    # rule, kept by reading sqlite_sequence too).
    db = sqlite3.connect(path)
    db.execute("DELETE FROM jobs WHERE id='e'")
    db.commit()
    db.close()
    store = SqliteStore(path)
    try:
        fresh = _job("g")
        await store.insert_job(fresh)
        assert fresh.queue_seq > fourth.queue_seq
        queued = [job.id for job in await store.jobs_in_state("queued")]
        assert queued == ["a", "b", "c", "g"]
    finally:
        await store.close()
