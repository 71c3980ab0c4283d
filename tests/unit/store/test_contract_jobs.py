"""The store contract, jobs: queue order, idempotency keys, fencing, records, sync states."""

from __future__ import annotations

import asyncio
import logging

import pytest
from store_contract import job, running

from bridgehead.control.store.base import Store
from bridgehead.protocol import SyncState


async def test_queue_order_is_the_order_of_submission(store: Store) -> None:
    """Positions are given when a job is submitted, before its write is durable, keyed or not."""
    a, b, c = job("a"), job("b", key="k"), job("c")
    first = store.insert_job(a)
    assert a.queue_seq > 0  # known before the write is durable
    await store.create_job(b)
    await store.insert_job(c)
    await first
    assert a.queue_seq < b.queue_seq < c.queue_seq
    assert ["a", "b", "c"] == [j.id for j in await store.jobs_in_state("queued")]
    assert ["c", "b", "a"] == [j.id for j in await store.list_jobs(None, None, 10, None)]


async def test_a_retry_keeps_its_place_in_line(store: Store) -> None:
    for job_id in ("a", "b"):
        await store.insert_job(job(job_id))
    await store.start_attempt("a", 1, "a1", 1.0)
    await store.requeue_job("a", "agent_lost", "the agent went away")
    queued = await store.jobs_in_state("queued")
    assert ["a", "b"] == [j.id for j in queued]
    assert (1, None, False, "agent_lost", "the agent went away") == (
        queued[0].attempt,
        queued[0].agent,
        queued[0].accepted,
        queued[0].error_code,
        queued[0].error_message,
    )


async def test_one_idempotency_key_is_one_job(store: Store) -> None:
    made, created = await store.create_job(job("a", key="k"))
    assert ("a", True) == (made.id, created)
    again, created = await store.create_job(job("b", key="k"))
    assert ("a", False) == (again.id, created)
    assert await store.get_job("b") is None


async def test_concurrent_creations_with_one_key_make_one_job(store: Store) -> None:
    results = await asyncio.gather(*(store.create_job(job(f"j{i}", key="k")) for i in range(5)))
    assert 1 == sum(created for _job, created in results)
    assert {"j0"} == {made.id for made, _created in results}
    assert ["j0"] == [j.id for j in await store.jobs_in_state("queued")]


async def test_list_jobs_filters_pages_and_stops_at_its_byte_cap(store: Store) -> None:
    for job_id, cluster in (("a", "x"), ("b", "y"), ("c", "x"), ("d", "x")):
        await store.insert_job(job(job_id, cluster=cluster))
    await store.start_attempt("d", 1, "a1", 1.0)
    assert ["c", "a"] == [j.id for j in await store.list_jobs("queued", "x", 10, None)]
    assert ["b", "a"] == [j.id for j in await store.list_jobs(None, None, 10, "c")]
    assert ["d"] == [j.id for j in await store.list_jobs(None, None, 1, None)]
    assert ["d"] == [j.id for j in await store.list_jobs(None, None, 10, None, max_bytes=1)]  # at least one
    assert [] == await store.list_jobs(None, None, 10, "unknown")


async def test_start_attempt_begins_afresh_and_drops_earlier_records(store: Store) -> None:
    await running(store, "j")
    await store.mark_accepted("j", 1, True)
    await store.append_records("j", 1, 1, [b"1", b"2"])
    await store.start_attempt("j", 2, "a2", 20.0)
    found = await store.get_job("j")
    assert found is not None
    assert ("running", 2, "a2", False, False, 0, 20.0) == (
        found.state,
        found.attempt,
        found.agent,
        found.accepted,
        found.safe_to_repeat,
        found.acked_seq,
        found.started_at,
    )
    assert [] == await store.records("j", 1, 0, 10)


async def test_a_stale_attempts_writes_do_not_land(store: Store) -> None:
    """Records, acceptance and the end of attempt 1 after attempt 2 started change nothing."""
    await running(store, "j", sink={"servicenow": "dev"})
    await store.start_attempt("j", 2, "a2", 20.0)
    await store.append_records("j", 2, 1, [b"new"])
    await store.append_records("j", 1, 2, [b"stale", b"stale"])
    await store.mark_accepted("j", 1, True)
    stale = SyncState(name="people", watermark="stale")
    await store.finish_job("j", 1, "succeeded", None, None, 3, 30.0, stale)
    found = await store.get_job("j")
    assert found is not None
    assert ("running", 2, 1, False, None) == (
        found.state,
        found.attempt,
        found.acked_seq,
        found.accepted,
        found.finished_at,
    )
    assert [(1, b"new")] == await store.records("j", 2, 0, 10)
    assert await store.sync_state("people") is None
    assert await store.delivery("j") is None


async def test_the_current_attempt_ends_the_job(store: Store) -> None:
    await running(store, "j")
    await store.mark_accepted("j", 1, True)
    await store.append_records("j", 1, 1, [b"a", b"b"])
    await store.finish_job("j", 1, "failed", "query_failed", "no such table", 2, 30.0)
    found = await store.get_job("j")
    assert found is not None
    assert ("failed", "query_failed", "no such table", 2, 30.0, 2, True, True) == (
        found.state,
        found.error_code,
        found.error_message,
        found.record_count,
        found.finished_at,
        found.acked_seq,
        found.accepted,
        found.safe_to_repeat,
    )
    assert found.terminal


async def test_cancel_is_requested_and_kept(store: Store) -> None:
    await running(store, "j")
    await store.request_cancel("j")
    found = await store.get_job("j")
    assert found is not None and found.cancel_requested


async def test_records_page_across_batches(store: Store) -> None:
    await running(store, "j")
    await store.append_records("j", 1, 1, [b"1", b"22", b"333"])
    await store.append_records("j", 1, 4, [b"4444", b"5"])
    await store.append_records("j", 1, 6, [b"66"])
    everything = [(1, b"1"), (2, b"22"), (3, b"333"), (4, b"4444"), (5, b"5"), (6, b"66")]
    assert everything == await store.records("j", 1, 0, 100)
    assert everything[2:5] == await store.records("j", 1, 2, 3)  # starts inside a batch, ends inside one
    assert everything[:3] == await store.records("j", 1, 0, 100, max_bytes=6)
    assert everything[:2] == await store.records("j", 1, 0, 100, max_bytes=5)
    assert [(4, b"4444")] == await store.records("j", 1, 3, 100, max_bytes=1)  # too large alone: alone
    assert [] == await store.records("j", 1, 6, 100)
    assert [] == await store.records("j", 1, 0, 0)
    found = await store.get_job("j")
    assert found is not None and 6 == found.acked_seq


async def test_a_batch_appended_again_is_kept_once(store: Store) -> None:
    await running(store, "j")
    await store.append_records("j", 1, 1, [b"a", b"b"])
    await store.append_records("j", 1, 1, [b"a", b"b"])
    assert [(1, b"a"), (2, b"b")] == await store.records("j", 1, 0, 10)


async def test_sync_state_is_kept_only_from_the_version_it_started_from(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    for job_id in ("j1", "j2", "j3", "j4"):
        await running(store, job_id)
    ids = bytes(range(32))  # two identities
    await store.finish_job("j1", 1, "succeeded", None, None, 0, 1.0, SyncState(name="s", watermark="w1", ids=ids))
    assert SyncState(name="s", version=1, watermark="w1", ids=ids) == await store.sync_state("s")
    # Two runs started from version 1: the first to end wins; the other's state is not kept.
    await store.finish_job("j2", 1, "succeeded", None, None, 0, 2.0, SyncState(name="s", version=1, watermark="w2"))
    with caplog.at_level(logging.WARNING):
        await store.finish_job("j3", 1, "succeeded", None, None, 0, 3.0, SyncState(name="s", version=1, watermark="w3"))
    assert any("another run has replaced" in r.getMessage() for r in caplog.records)
    await store.finish_job("j4", 1, "failed", "x", "y", 0, 4.0, SyncState(name="s", version=2, watermark="w4"))
    kept = await store.sync_state("s")
    assert kept is not None and ("w2", 2) == (kept.watermark, kept.version)
    (summary,) = await store.sync_states()
    assert ("s", 2, "w2", 0, "j2", 2.0) == (
        summary.name,
        summary.version,
        summary.watermark,
        summary.identities,
        summary.job_id,
        summary.updated_at,
    )
    await store.delete_sync_state("s")
    assert await store.sync_state("s") is None
    assert [] == await store.sync_states()


async def test_sync_states_page_by_name(store: Store) -> None:
    for i, name in enumerate(("c", "a", "b")):
        await running(store, f"j{i}")
        await store.finish_job(f"j{i}", 1, "succeeded", None, None, 0, 1.0, SyncState(name=name))
    assert ["a", "b", "c"] == [s.name for s in await store.sync_states()]
    assert ["b"] == [s.name for s in await store.sync_states(after="a", limit=1)]
