"""The store contract, durability: writes issued in call order, resolved once durable, and read
back after a restart; a failed write is not there."""

from __future__ import annotations

import asyncio

import pytest
from store_contract import Reopen, job, running

from bridgehead.control.store.base import CLI, ScheduleRow, Store
from bridgehead.protocol import SyncState


async def test_acknowledged_writes_are_there_after_a_crash(store: Store, reopen: Reopen) -> None:
    """Everything awaited is read back by a store opened while the first was never closed."""
    await store.create_job(job("keyed", key="k"))
    await running(store, "j", sink={"servicenow": "dev"})
    await store.append_records("j", 1, 1, [b"a", b"b"])
    await store.finish_job("j", 1, "succeeded", None, None, 2, 5.0, SyncState(name="s", watermark="w"))
    await store.add_api_token("hash" * 16, "admin", "ops", 1.0)
    await store.audit(CLI, "token.create", {"name": "ops"}, 1.0)
    await store.add_schedule(ScheduleRow("nightly", "0 2 * * *", "UTC", {"plugin": "sql"}, next_run_at=9.0), 10)

    after = reopen()
    found = await after.get_job("j")
    assert found is not None and ("succeeded", 2, 2) == (found.state, found.record_count, found.acked_seq)
    assert [(1, b"a"), (2, b"b")] == await after.records("j", 1, 0, 10)
    kept = await after.sync_state("s")
    assert kept is not None and "w" == kept.watermark
    delivery = await after.delivery("j")
    assert delivery is not None and "pending" == delivery.state  # queued in the job's last commit
    keyed, created = await after.create_job(job("other", key="k"))
    assert ("keyed", False) == (keyed.id, created)
    token = await after.api_token("hash" * 16)
    assert token is not None and "admin" == token.role
    assert ["token.create"] == [e.action for e in await after.audit_log(0, 10)]
    assert ["nightly"] == [s.name for s in await after.due_schedules(10.0)]


async def test_a_restart_continues_the_queue(store: Store, reopen: Reopen) -> None:
    await running(store, "running")
    await store.insert_job(job("queued"))
    last = job("last")
    await store.insert_job(last)
    await store.close()

    after = reopen()
    assert ["running"] == [j.id for j in await after.jobs_in_state("running")]
    assert ["queued", "last"] == [j.id for j in await after.jobs_in_state("queued")]
    later = job("later")
    await after.insert_job(later)
    assert later.queue_seq > last.queue_seq


async def test_writes_are_issued_when_called_and_applied_in_that_order(store: Store) -> None:
    """Awaiting only the last write of a sequence: the ones issued before it are durable too."""
    await store.insert_job(job("j"))
    resolved: list[str] = []
    writes = {
        "start": store.start_attempt("j", 1, "a1", 1.0),
        "records": store.append_records("j", 1, 1, [b"x"]),
        "finish": store.finish_job("j", 1, "succeeded", None, None, 1, 2.0),
    }
    for name, write in writes.items():
        asyncio.ensure_future(write).add_done_callback(lambda _f, name=name: resolved.append(name))
    await writes["finish"]
    found = await store.get_job("j")
    assert found is not None and ("succeeded", 1, 1) == (found.state, found.acked_seq, found.record_count)
    for write in writes.values():
        await write
    assert ["start", "records", "finish"] == resolved


async def test_a_failed_write_is_not_acknowledged(store: Store, reopen: Reopen) -> None:
    await store.add_api_token("h" * 64, "read", "first", 1.0)
    with pytest.raises(Exception):  # noqa: B017 - each backend raises its own error for a taken hash
        await store.add_api_token("h" * 64, "admin", "second", 2.0)
    (token,) = await reopen().api_tokens()
    assert ("read", "first") == (token.role, token.name)


async def test_close_makes_issued_writes_durable(store: Store, reopen: Reopen) -> None:
    issued = store.audit(CLI, "agent.revoke", {"agent": "x"}, 1.0)
    await store.close()
    await issued
    assert ["agent.revoke"] == [e.action for e in await reopen().audit_log(0, 10)]
