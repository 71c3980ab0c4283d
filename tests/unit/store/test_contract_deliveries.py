"""The store contract, sink deliveries: queued with the job's end, claimed by one node with a
lease and started, batch by batch (fenced by the lease), ended, retried, taken over by another
node once the lease lapses; and the sinks' refresh tokens."""

from __future__ import annotations

from store_contract import Reopen, running

from bridgehead.control.store.base import Rejected, Store
from bridgehead.control.store.rows import Delivery

SINK = {"servicenow": "dev", "table": "u_people"}
NO_COUNTS = {"inserted": 0, "updated": 0, "ignored": 0, "skipped": 0, "errors": 0}
ME, OTHER = "node-a", "node-b"
LEASE = 100.0  # the leases of these tests run to now + LEASE


async def succeeded(store: Store, job_id: str, records: int = 4, sink: dict[str, str] | None = SINK) -> None:
    await running(store, job_id, sink=sink)
    await store.finish_job(job_id, 1, "succeeded", None, None, records, 5.0)


async def test_a_succeeded_jobs_delivery_is_queued_in_its_last_commit(store: Store, reopen: Reopen) -> None:
    await succeeded(store, "j")
    delivery = await reopen().delivery("j")
    assert delivery is not None
    assert ("dev", "pending", 0, 4, 5.0, None) == (
        delivery.instance,
        delivery.state,
        delivery.batch_size,
        delivery.total,
        delivery.started_at,
        delivery.finished_at,
    )
    assert not await store.queue_delivery("j", 1, 6.0)  # queued already: kept as it is


async def test_only_a_succeeded_job_with_a_sink_has_a_delivery(store: Store) -> None:
    await succeeded(store, "plain", sink=None)
    await running(store, "failed", sink=SINK)
    await store.finish_job("failed", 1, "failed", "x", "y", 0, 5.0)
    for job_id in ("plain", "failed", "unknown"):
        assert await store.delivery(job_id) is None
        assert not await store.queue_delivery(job_id, 1, 6.0)
    assert [] == await store.deliveries_to_run(10, ME, 6.0)


async def start(store: Store, job_id: str, batch_size: int, now: float, node: str = ME) -> Delivery:
    started = await store.start_delivery(job_id, batch_size, now, node, now + LEASE)
    assert started is not None
    return started


async def test_deliveries_run_in_the_order_they_were_queued(store: Store) -> None:
    for job_id in ("b", "a", "c"):
        await succeeded(store, job_id)
    assert ["b", "a", "c"] == await store.deliveries_to_run(10, ME, 6.0)
    await start(store, "b", 2, 6.0)  # cut short by a restart: still to run
    await start(store, "a", 2, 6.0)
    await store.end_delivery("a", "done", None, None, 7.0, ME)
    assert ["b", "c"] == await store.deliveries_to_run(10, ME, 7.0)
    assert ["b"] == await store.deliveries_to_run(1, ME, 7.0)


async def test_a_delivery_keeps_its_first_batch_size(store: Store) -> None:
    await succeeded(store, "j")
    started = await start(store, "j", 2, 6.0)
    assert ("delivering", 2, 6.0) == (started.state, started.batch_size, started.started_at)
    resumed = await start(store, "j", 50, 9.0)
    assert ("delivering", 2, 6.0) == (resumed.state, resumed.batch_size, resumed.started_at)


async def test_a_batch_size_of_zero_leaves_it_to_the_next_start(store: Store) -> None:
    """A delivery failed before its first batch (an invalid sink) fixes no batch size."""
    await succeeded(store, "j")
    await start(store, "j", 0, 6.0)
    await store.end_delivery("j", "failed", "invalid_sink", "no instance", 6.5, ME)
    await store.retry_delivery("j", 7.0)
    assert 5 == (await start(store, "j", 5, 8.0)).batch_size


async def test_finished_batches_are_the_cursor_and_count_once(store: Store) -> None:
    await succeeded(store, "j")
    await start(store, "j", 2, 6.0)
    assert set() == await store.delivered_batches("j")
    assert {**NO_COUNTS, "delivered": 0} == await store.delivery_counts("j")
    bad = Rejected(2, "error", "invalid value", {"u_name": ""})
    assert await store.finish_batch("j", 1, 2, {"inserted": 1, "errors": 1}, [bad], 7.0, ME)
    assert await store.finish_batch("j", 1, 2, {"inserted": 1, "errors": 1}, [bad], 7.5, ME)  # sent again
    assert await store.finish_batch("j", 3, 4, {"updated": 2}, [], 8.0, ME)
    assert {1, 3} == await store.delivered_batches("j")
    assert {**NO_COUNTS, "inserted": 1, "updated": 2, "errors": 1, "delivered": 4} == await store.delivery_counts("j")
    assert 1 == await store.rejected_count("j")
    assert [bad] == await store.rejected("j", 0, 10)
    assert [] == await store.rejected("j", 2, 10)


async def test_rejected_records_page_by_seq(store: Store) -> None:
    await succeeded(store, "j", records=6)
    await start(store, "j", 3, 6.0)
    late = [Rejected(seq, "error", "no", {"n": seq}) for seq in (6, 4)]
    await store.finish_batch("j", 4, 6, {"errors": 2}, late, 7.0, ME)
    await store.finish_batch("j", 1, 3, {"errors": 1}, [Rejected(1, "error", "no", {"n": 1})], 8.0, ME)
    assert [1, 4] == [r.seq for r in await store.rejected("j", 0, 2)]
    assert [6] == [r.seq for r in await store.rejected("j", 4, 10)]


async def test_a_failed_delivery_is_retried_and_a_done_one_is_not(store: Store) -> None:
    await succeeded(store, "j")
    await succeeded(store, "k")
    await start(store, "j", 2, 6.0)
    await start(store, "k", 2, 6.0)
    assert await store.end_delivery("j", "failed", "auth_failed", "401 from the instance", 7.0, ME)
    failed = await store.delivery("j")
    assert failed is not None and ("failed", "auth_failed", 7.0) == (
        failed.state,
        failed.error_code,
        failed.finished_at,
    )
    assert await store.end_delivery("k", "done", None, None, 7.0, ME)
    await store.retry_delivery("j", 8.0)
    await store.retry_delivery("k", 8.0)
    retried, done = await store.delivery("j"), await store.delivery("k")
    assert retried is not None and ("pending", None, None) == (
        retried.state,
        retried.error_code,
        retried.finished_at,
    )
    assert done is not None and "done" == done.state
    assert ["j"] == await store.deliveries_to_run(10, OTHER, 8.0)  # a retried one is any node's


async def test_a_run_is_over_once_its_delivery_is(store: Store) -> None:
    await running(store, "j", sink=SINK)
    assert not await store.delivery_finished("j")  # still running
    await store.finish_job("j", 1, "succeeded", None, None, 4, 5.0)
    assert not await store.delivery_finished("j")  # delivery pending
    await start(store, "j", 2, 5.5)
    await store.end_delivery("j", "done", None, None, 6.0, ME)
    assert await store.delivery_finished("j")
    await succeeded(store, "plain", sink=None)
    assert await store.delivery_finished("plain")
    await running(store, "failed", sink=SINK)
    await store.finish_job("failed", 1, "failed", "x", "y", 0, 5.0)
    assert await store.delivery_finished("failed")
    assert await store.delivery_finished("unknown")


async def test_one_node_at_a_time_drives_a_delivery(store: Store) -> None:
    """A delivery another node holds is not offered, and a claim of it is refused."""
    await succeeded(store, "j")
    await start(store, "j", 2, 6.0)
    assert [] == await store.deliveries_to_run(10, OTHER, 7.0)
    assert await store.start_delivery("j", 2, 7.0, OTHER, 7.0 + LEASE) is None
    assert ["j"] == await store.deliveries_to_run(10, ME, 7.0)  # its own node, restarted, resumes it
    assert (await start(store, "j", 2, 7.0)).state == "delivering"


async def test_a_lapsed_lease_is_taken_over_and_fences_its_old_node(store: Store) -> None:
    """Past its lease, another node claims the delivery and resumes from the cursor; the old
    node's late batch and end are refused, and nothing of them is kept."""
    await succeeded(store, "j", records=6)
    await start(store, "j", 2, 6.0)
    assert await store.finish_batch("j", 1, 2, {"inserted": 2}, [], 7.0, ME)
    lapsed = 6.0 + LEASE + 1
    assert ["j"] == await store.deliveries_to_run(10, OTHER, lapsed)
    taken = await start(store, "j", 50, lapsed, OTHER)
    assert ("delivering", 2) == (taken.state, taken.batch_size)
    assert {1} == await store.delivered_batches("j")
    late = Rejected(3, "error", "late", {"n": 3})
    assert not await store.finish_batch("j", 3, 4, {"errors": 1}, [late], lapsed, ME)
    assert not await store.end_delivery("j", "done", None, None, lapsed, ME)
    assert set() == await store.renew_deliveries(ME, ["j"], lapsed + LEASE)
    assert {1} == await store.delivered_batches("j") and 0 == await store.rejected_count("j")
    assert await store.finish_batch("j", 3, 4, {"inserted": 2}, [], lapsed, OTHER)
    assert await store.end_delivery("j", "done", None, None, lapsed, OTHER)
    ended = await store.delivery("j")
    assert ended is not None and "done" == ended.state
    assert {**NO_COUNTS, "inserted": 4, "delivered": 4} == await store.delivery_counts("j")


async def test_a_renewed_lease_holds_and_a_handed_back_one_is_free(store: Store) -> None:
    await succeeded(store, "j")
    await succeeded(store, "k")
    await start(store, "j", 2, 6.0)
    assert {"j"} == await store.renew_deliveries(ME, ["j", "k"], 6.0 + 3 * LEASE)  # k: not held
    assert ["k"] == await store.deliveries_to_run(10, OTHER, 6.0 + 2 * LEASE)  # k: pending
    assert await store.start_delivery("j", 2, 6.0 + 2 * LEASE, OTHER, 6.0 + 4 * LEASE) is None
    assert {"j"} == await store.renew_deliveries(ME, ["j"], 0.0)  # handed back (a node stopping)
    assert ["j", "k"] == await store.deliveries_to_run(10, OTHER, 7.0)
    assert "delivering" == (await start(store, "j", 2, 7.0, OTHER)).state


async def test_an_ended_delivery_is_not_claimed(store: Store) -> None:
    await succeeded(store, "j")
    await start(store, "j", 2, 6.0)
    await store.end_delivery("j", "done", None, None, 7.0, ME)
    assert await store.start_delivery("j", 2, 8.0, ME, 8.0 + LEASE) is None
    assert await store.start_delivery("unknown", 2, 8.0, ME, 8.0 + LEASE) is None


async def test_the_newest_refresh_token_is_kept(store: Store, reopen: Reopen) -> None:
    assert await store.refresh_token("dev") is None
    await store.keep_refresh_token("dev", "r1", "origin-a", 1.0)
    await store.keep_refresh_token("dev", "r2", "origin-a", 2.0)
    assert ("r2", "origin-a") == await reopen().refresh_token("dev")
