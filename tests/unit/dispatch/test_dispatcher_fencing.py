"""Fencing in the Dispatcher against the in-memory store: frames of a stale attempt after a
requeue, or of another agent, change nothing; sequence gaps close the session; reconnects
resume only what is current."""

from __future__ import annotations

import time

import pytest
from dispatch_fakes import Ends, FakeAgent, new_job

from bridgehead.control.dispatch import Dispatcher
from bridgehead.control.store.memory import MemoryStore
from bridgehead.protocol import Abandon, Ack, CompleteAck, HeldJob, Offer, Progress, ProtocolError


async def requeued_to_b(dispatcher: Dispatcher) -> tuple[FakeAgent, FakeAgent, Offer, Offer]:
    """Job j1 ran as attempt 1 on a, whose lease lapsed; it now runs as attempt 2 on b."""
    a, b = FakeAgent(dispatcher, "a"), FakeAgent(dispatcher, "b")
    a.connect(credit=1)
    await dispatcher.submit(new_job("j1", max_attempts=3))
    first = await a.next(Offer)
    a.accept(first, safe_to_repeat=True)
    b.connect(credit=1)
    later = time.monotonic() + dispatcher.lease_s + 1
    b.link.last_seen = later  # b keeps talking; a is silent: dropped, and its lease lapses
    dispatcher.check_leases(later)
    second = await b.next(Offer)
    assert (first.job_id, 2) == (second.job_id, second.attempt)
    return a, b, first, second


async def test_records_of_a_stale_attempt_are_abandoned_and_not_kept(
    dispatcher: Dispatcher, store: MemoryStore
) -> None:
    a, b, first, second = await requeued_to_b(dispatcher)
    # a's old session is closed; it reconnects and still talks about attempt 1
    a2 = FakeAgent(dispatcher, "a")
    a2.connect()
    a2.records(first, 1, 10, 11)
    abandon = await a2.next(Abandon)
    assert (first.job_id, first.attempt) == (abandon.job_id, abandon.attempt)
    b.records(second, 1, 20)
    await b.next(Ack)
    assert [b'{"n":20}'] == [data for _seq, data in await store.records("j1", 2, 0, 100)]
    assert [] == await store.records("j1", 1, 0, 100)
    job = await store.get_job("j1")
    assert job is not None and (2, "b", 1) == (job.attempt, job.agent, job.acked_seq)


async def test_a_stale_completion_is_abandoned_and_does_not_end_the_job(dispatcher: Dispatcher) -> None:
    a, b, first, second = await requeued_to_b(dispatcher)
    a2 = FakeAgent(dispatcher, "a")
    a2.connect()
    a2.complete(first, "succeeded")
    await a2.next(Abandon)
    assert [] == a2.of(CompleteAck)
    job = await dispatcher.store.get_job("j1")
    assert job is not None and ("running", 2) == (job.state, job.attempt)
    assert "j1" in dispatcher.live


async def test_frames_from_another_agent_change_nothing(dispatcher: Dispatcher, store: MemoryStore) -> None:
    """An agent naming a job and attempt it does not hold gets ``abandon``; the holder goes on."""
    ends = Ends(dispatcher)
    holder, intruder = FakeAgent(dispatcher, "a"), FakeAgent(dispatcher, "b")
    holder.connect(credit=1)
    intruder.connect()
    await dispatcher.submit(new_job("j1"))
    offer = await holder.next(Offer)
    intruder.records(offer, 1, 666)
    intruder.say(Progress(job_id="j1", attempt=1, done=1))
    intruder.complete(offer, "failed", 0)
    await intruder.next(Abandon, after=1)
    assert "j1" not in dispatcher.progress
    holder.records(offer, 1, 1, 2)
    holder.complete(offer, "succeeded", 2)
    job = await ends.of("j1")
    assert ("succeeded", "a", 2) == (job.state, job.agent, job.record_count)
    assert [b'{"n":1}', b'{"n":2}'] == [data for _seq, data in await store.records("j1", 1, 0, 100)]


async def test_a_resent_batch_is_acked_without_being_kept_twice(dispatcher: Dispatcher, store: MemoryStore) -> None:
    agent = FakeAgent(dispatcher, "a")
    agent.connect(credit=1)
    await dispatcher.submit(new_job("j1"))
    offer = await agent.next(Offer)
    agent.records(offer, 1, 1, 2)
    agent.records(offer, 1, 1, 2, 3)  # re-sent from seq 1 after a reconnect, one more record
    assert 3 == (await agent.next(Ack, after=1)).seq
    agent.records(offer, 2, 2)
    assert 3 == (await agent.next(Ack, after=2)).seq
    assert [1, 2, 3] == [seq for seq, _data in await store.records("j1", 1, 0, 100)]


async def test_a_gap_in_records_or_a_short_completion_closes_the_session(dispatcher: Dispatcher) -> None:
    agent = FakeAgent(dispatcher, "a")
    agent.connect(credit=2)
    await dispatcher.submit(new_job("j1"))
    await dispatcher.submit(new_job("j2"))
    offer = await agent.next(Offer)
    with pytest.raises(ProtocolError, match="record_gap"):
        agent.records(offer, 2, 2)
    other = await agent.next(Offer, after=1)
    agent.records(other, 1, 1)
    with pytest.raises(ProtocolError, match="record_gap"):
        agent.complete(other, "succeeded", 2)


async def test_a_reconnect_continues_the_current_attempt_from_its_ack(dispatcher: Dispatcher) -> None:
    agent = FakeAgent(dispatcher, "a")
    agent.connect(credit=1)
    await dispatcher.submit(new_job("j1"))
    offer = await agent.next(Offer)
    agent.records(offer, 1, 1, 2)
    await agent.next(Ack)
    again = FakeAgent(dispatcher, "a")
    held = [
        HeldJob(job_id="j1", attempt=1, state="running", next_seq=5),
        HeldJob(job_id="gone", attempt=1, state="done"),
    ]
    continued, dropped = again.connect(jobs=held)
    assert ("continue", 2) == (continued.action, continued.acked_seq)
    assert "abandon" == dropped.action
    assert agent.closed is not None and 4004 == agent.closed[0]  # the older session is replaced


async def test_an_agent_back_without_its_attempt_loses_it(dispatcher: Dispatcher) -> None:
    """Offered but never journaled there (or its journal is gone): a new attempt elsewhere."""
    a, b = FakeAgent(dispatcher, "a"), FakeAgent(dispatcher, "b")
    a.connect(credit=1)
    await dispatcher.submit(new_job("j1"))
    await a.next(Offer)
    FakeAgent(dispatcher, "a").connect(jobs=[])
    b.connect(credit=1)
    assert 2 == (await b.next(Offer)).attempt
