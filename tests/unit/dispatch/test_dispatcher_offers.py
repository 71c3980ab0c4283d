"""The Dispatcher's offers against the in-memory store: order of record and offer, queues
across clusters, sync state in the offer, cancel, and fail-stop."""

from __future__ import annotations

import asyncio

import msgspec
from dispatch_fakes import Ends, FakeAgent, new_job

from bridgehead.control.dispatch import Dispatcher
from bridgehead.control.store.memory import MemoryStore
from bridgehead.protocol import Ack, Cancel, CompleteAck, Offer, SyncState


async def test_an_attempt_is_on_record_before_its_offer_is_sent(dispatcher: Dispatcher, store: MemoryStore) -> None:
    """When the offer reaches the link, the store already holds the job running as attempt 1 there."""
    agent = FakeAgent(dispatcher, "a")
    seen_when_offered: list[tuple[str, int, str | None]] = []
    send_encoded = agent.link.send_encoded

    def record_then_send(frame: bytes) -> None:
        row = store.state.jobs["j1"]
        seen_when_offered.append((row.state, row.attempt, row.agent))
        send_encoded(frame)

    agent.link.send_encoded = record_then_send
    agent.connect(credit=1)
    await dispatcher.submit(new_job("j1"))
    offer = await agent.next(Offer)
    assert (1, "a") == (offer.attempt, offer.agent)
    assert [("running", 1, "a")] == seen_when_offered
    assert 0 == agent.link.credit


async def test_jobs_go_only_to_agents_of_their_cluster(dispatcher: Dispatcher) -> None:
    """Fair queues per cluster: an agent of c2 with credit gets nothing of c1's."""
    c1, c2 = FakeAgent(dispatcher, "a", "c1"), FakeAgent(dispatcher, "b", "c2")
    c2.connect(credit=5)
    await dispatcher.submit(new_job("j1", cluster="c1"))
    assert [] == c2.of(Offer)
    c1.connect(credit=5)
    assert "j1" == (await c1.next(Offer)).job_id


async def test_agents_share_a_burst_in_turn(dispatcher: Dispatcher) -> None:
    a, b = FakeAgent(dispatcher, "a"), FakeAgent(dispatcher, "b")
    a.connect()
    b.connect()
    for i in range(4):
        await dispatcher.submit(new_job(f"j{i}"))
    a.link.credit = b.link.credit = 10
    dispatcher.dispatch("c1")
    await a.next(Offer, after=1)
    await b.next(Offer, after=1)
    assert (2, 2) == (len(a.of(Offer)), len(b.of(Offer)))


async def test_a_job_too_large_to_send_fails_and_keeps_the_credit(dispatcher: Dispatcher) -> None:
    agent = FakeAgent(dispatcher, "a")
    ends = Ends(dispatcher)
    agent.connect(credit=1)
    await dispatcher.submit(new_job("big", params={"blob": "x" * (2 << 20)}))
    job = await ends.of("big")
    assert ("failed", "invalid_job") == (job.state, job.error_code)
    assert 1 == agent.link.credit
    assert [] == agent.of(Offer)


async def test_a_sync_job_carries_its_state_in_the_offer_not_its_params(dispatcher: Dispatcher) -> None:
    """The offer carries the state the run starts from; a succeeded run's state is kept and
    handed to the sync's next job."""
    agent = FakeAgent(dispatcher, "a")
    agent.connect(credit=2)
    params = {"mode": "sync", "sync": "people", "connection": "dir"}
    await dispatcher.submit(new_job("s1", plugin="ldap", params=params))
    first = await agent.next(Offer)
    assert SyncState(name="people") == first.sync_state
    assert params == first.params
    agent.accept(first)
    kept = SyncState(name="people", version=0, watermark="w1", ids=b"\x01" * 16)
    agent.complete(first, sync_state=kept)
    await agent.next(CompleteAck)
    await dispatcher.submit(new_job("s2", plugin="ldap", params=params))
    second = await agent.next(Offer, after=1)
    assert msgspec.structs.replace(kept, version=1) == second.sync_state


async def test_other_jobs_carry_no_sync_state(dispatcher: Dispatcher) -> None:
    agent = FakeAgent(dispatcher, "a")
    agent.connect(credit=1)
    await dispatcher.submit(new_job("e1", params={"count": 1}))
    assert (await agent.next(Offer)).sync_state is None


async def test_a_sync_job_cancelled_while_its_state_is_read_is_not_offered(
    dispatcher: Dispatcher, store: MemoryStore
) -> None:
    """Between its queue and its offer (the state read), a cancel ends it as a queued job."""
    gate = asyncio.Event()
    read = store.sync_state

    async def slow_read(name: str) -> SyncState | None:
        await gate.wait()
        return await read(name)

    store.sync_state = slow_read  # type: ignore[method-assign]
    agent = FakeAgent(dispatcher, "a")
    agent.connect(credit=1)
    stored, _ = await dispatcher.submit(new_job("s1", plugin="ldap", params={"mode": "sync", "sync": "people"}))
    assert "s1" in dispatcher.pending
    job = await dispatcher.cancel(stored)
    assert "cancelled" == job.state
    gate.set()
    await dispatcher.submit(new_job("e1"))
    assert "e1" == (await agent.next(Offer)).job_id  # the credit came back, and went to the next job
    assert ["e1"] == [o.job_id for o in agent.of(Offer)]


async def test_cancel_of_a_queued_job_ends_it_at_once(dispatcher: Dispatcher) -> None:
    stored, _ = await dispatcher.submit(new_job("j1"))
    job = await dispatcher.cancel(stored)
    assert ("cancelled", "cancelled") == (job.state, job.error_code)
    assert 0 == len(dispatcher.queues)


async def test_cancel_of_a_running_job_reaches_its_agent_and_ends_it_cancelled(dispatcher: Dispatcher) -> None:
    """The agent hears ``cancel``; its failed completion then counts as the cancel taking effect."""
    agent = FakeAgent(dispatcher, "a")
    ends = Ends(dispatcher)
    agent.connect(credit=1)
    stored, _ = await dispatcher.submit(new_job("j1", max_attempts=3))
    offer = await agent.next(Offer)
    agent.accept(offer, safe_to_repeat=True)
    running = await dispatcher.cancel(stored)
    assert running.cancel_requested
    assert (offer.job_id, offer.attempt) == ((c := await agent.next(Cancel)).job_id, c.attempt)
    agent.fail(offer, "cancelled_by_agent", retryable=True)  # retryable, but a cancel was asked for
    job = await ends.of("j1")
    assert ("cancelled", 1) == (job.state, job.attempt)


async def test_a_failed_store_write_stops_the_process_unacknowledged(
    dispatcher: Dispatcher, store: MemoryStore
) -> None:
    """Fail-stop: a write that fails leaves memory and store apart, so its ack is never sent."""
    agent = FakeAgent(dispatcher, "a")
    agent.connect(credit=1)
    await dispatcher.submit(new_job("j1"))
    offer = await agent.next(Offer)
    stopped: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    dispatcher.fail_stop = stopped.set_result  # type: ignore[method-assign]
    store.append_records = lambda *_args: store._write(_disk_full)  # type: ignore[method-assign]
    agent.records(offer, 1, 1)
    error = await asyncio.wait_for(stopped, 2.0)
    assert isinstance(error, OSError)
    assert [] == agent.of(Ack)


def _disk_full() -> None:
    raise OSError("disk full")
