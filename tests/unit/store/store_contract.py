"""Helpers of the store contract suite (the fixtures are in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

from bridgehead.control.store.base import JobRow, Store

Reopen = Callable[[], Store]  # another store over the same data (a restart, or another process)


def job(job_id: str, key: str | None = None, sink: dict[str, str] | None = None, cluster: str = "c") -> JobRow:
    return JobRow(id=job_id, plugin="sql", params={"q": job_id}, cluster=cluster, idempotency_key=key, sink=sink)


async def running(store: Store, job_id: str, sink: dict[str, str] | None = None) -> None:
    """A job on its first attempt, on agent "a1"."""
    await store.insert_job(job(job_id, sink=sink))
    await store.start_attempt(job_id, 1, "a1", 10.0)
