"""The store contract, sink deliveries: queued with the job's end, started, batch by batch,
ended, retried; and the sinks' refresh tokens."""

from __future__ import annotations

from store_contract import Reopen, running

from bridgehead.control.store.base import Rejected, Store

SINK = {"servicenow": "dev", "table": "u_people"}
NO_COUNTS = {"inserted": 0, "updated": 0, "ignored": 0, "skipped": 0, "errors": 0}


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
    assert [] == await store.deliveries_to_run(10)


async def test_deliveries_run_in_the_order_they_were_queued(store: Store) -> None:
    for job_id in ("b", "a", "c"):
        await succeeded(store, job_id)
    assert ["b", "a", "c"] == await store.deliveries_to_run(10)
    await store.start_delivery("b", 2, 6.0)  # cut short by a restart: still to run
    await store.end_delivery("a", "done", None, None, 7.0)
    assert ["b", "c"] == await store.deliveries_to_run(10)
    assert ["b"] == await store.deliveries_to_run(1)


async def test_a_delivery_keeps_its_first_batch_size(store: Store) -> None:
    await succeeded(store, "j")
    started = await store.start_delivery("j", 2, 6.0)
    assert ("delivering", 2, 6.0) == (started.state, started.batch_size, started.started_at)
    resumed = await store.start_delivery("j", 50, 9.0)
    assert ("delivering", 2, 6.0) == (resumed.state, resumed.batch_size, resumed.started_at)


async def test_finished_batches_are_the_cursor_and_count_once(store: Store) -> None:
    await succeeded(store, "j")
    await store.start_delivery("j", 2, 6.0)
    assert set() == await store.delivered_batches("j")
    assert {**NO_COUNTS, "delivered": 0} == await store.delivery_counts("j")
    bad = Rejected(2, "error", "invalid value", {"u_name": ""})
    await store.finish_batch("j", 1, 2, {"inserted": 1, "errors": 1}, [bad], 7.0)
    await store.finish_batch("j", 1, 2, {"inserted": 1, "errors": 1}, [bad], 7.5)  # sent again after a restart
    await store.finish_batch("j", 3, 4, {"updated": 2}, [], 8.0)
    assert {1, 3} == await store.delivered_batches("j")
    assert {**NO_COUNTS, "inserted": 1, "updated": 2, "errors": 1, "delivered": 4} == await store.delivery_counts("j")
    assert 1 == await store.rejected_count("j")
    assert [bad] == await store.rejected("j", 0, 10)
    assert [] == await store.rejected("j", 2, 10)


async def test_rejected_records_page_by_seq(store: Store) -> None:
    await succeeded(store, "j", records=6)
    await store.start_delivery("j", 3, 6.0)
    late = [Rejected(seq, "error", "no", {"n": seq}) for seq in (6, 4)]
    await store.finish_batch("j", 4, 6, {"errors": 2}, late, 7.0)
    await store.finish_batch("j", 1, 3, {"errors": 1}, [Rejected(1, "error", "no", {"n": 1})], 8.0)
    assert [1, 4] == [r.seq for r in await store.rejected("j", 0, 2)]
    assert [6] == [r.seq for r in await store.rejected("j", 4, 10)]


async def test_a_failed_delivery_is_retried_and_a_done_one_is_not(store: Store) -> None:
    await succeeded(store, "j")
    await succeeded(store, "k")
    await store.start_delivery("j", 2, 6.0)
    await store.end_delivery("j", "failed", "auth_failed", "401 from the instance", 7.0)
    failed = await store.delivery("j")
    assert failed is not None and ("failed", "auth_failed", 7.0) == (
        failed.state,
        failed.error_code,
        failed.finished_at,
    )
    await store.end_delivery("k", "done", None, None, 7.0)
    await store.retry_delivery("j", 8.0)
    await store.retry_delivery("k", 8.0)
    retried, done = await store.delivery("j"), await store.delivery("k")
    assert retried is not None and ("pending", None, None) == (
        retried.state,
        retried.error_code,
        retried.finished_at,
    )
    assert done is not None and "done" == done.state


async def test_a_run_is_over_once_its_delivery_is(store: Store) -> None:
    await running(store, "j", sink=SINK)
    assert not await store.delivery_finished("j")  # still running
    await store.finish_job("j", 1, "succeeded", None, None, 4, 5.0)
    assert not await store.delivery_finished("j")  # delivery pending
    await store.end_delivery("j", "done", None, None, 6.0)
    assert await store.delivery_finished("j")
    await succeeded(store, "plain", sink=None)
    assert await store.delivery_finished("plain")
    await running(store, "failed", sink=SINK)
    await store.finish_job("failed", 1, "failed", "x", "y", 0, 5.0)
    assert await store.delivery_finished("failed")
    assert await store.delivery_finished("unknown")


async def test_the_newest_refresh_token_is_kept(store: Store, reopen: Reopen) -> None:
    assert await store.refresh_token("dev") is None
    await store.keep_refresh_token("dev", "r1", "origin-a", 1.0)
    await store.keep_refresh_token("dev", "r2", "origin-a", 2.0)
    assert ("r2", "origin-a") == await reopen().refresh_token("dev")
