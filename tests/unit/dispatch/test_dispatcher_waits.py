"""Waiting for a job's end (``?wait=`` on submit and on GET): the waiter wakes however the
end and the wait interleave, and never before the end is durable.

The race these pin down was seen for real: with offers leaving at their attempt's commit,
an agent that answers without flushing its journal (``synchronous = "normal"`` on the agent
only) ended jobs before the submitter's own write resolved, so the submitter began to wait
for an end that had already happened, and its answer came only when its wait ran out
(bench/dispatch.py's 32 connections: 213 jobs/s instead of 3,000). The in-memory store's
held flush (``hold_durability``) stands for the SQLite store's fdatasync.
"""

from __future__ import annotations

import asyncio

from dispatch_fakes import FakeAgent, new_job, running_job, turns

from bridgehead.control.dispatch import Dispatcher
from bridgehead.control.store.memory import MemoryStore
from bridgehead.protocol import CompleteAck, Offer

# Long enough never to run out on a loaded machine; a wait that misses the end returns None
# when it does, which is what the assertions look for (not the time it took).
WAIT_S = 10.0


async def test_a_wait_that_begins_after_the_end_returns_the_end(dispatcher: Dispatcher, store: MemoryStore) -> None:
    agent, offer = await running_job(dispatcher, safe_to_repeat=True)
    agent.complete(offer)
    await agent.next(CompleteAck)  # premise: the end is durable before anyone waits
    job = await store.get_job("j1")
    assert job is not None and job.state == "succeeded"
    outcome = await dispatcher.wait("j1", WAIT_S)
    assert outcome is not None, "the wait missed an end that had already happened"
    assert outcome["state"] == "succeeded"


async def test_a_job_that_ends_in_its_submissions_flush_wakes_the_submitter(
    dispatcher: Dispatcher, store: MemoryStore
) -> None:
    """The case seen for real: the offer leaves at the commit, the agent ends the job at
    once, and the submission and the end become durable in one flush."""
    agent = FakeAgent(dispatcher, "a", confirms=True)
    agent.connect(credit=1)
    store.hold_durability()
    submitted = asyncio.ensure_future(dispatcher.submit(new_job("j1")))
    offer = await agent.next(Offer)
    assert offer.confirm_follows, "premise: the offer left before the submission was durable"
    agent.accept(offer, safe_to_repeat=True)
    agent.complete(offer)
    await turns()
    assert not submitted.done(), "premise: the submission waits for the flush"
    store.release_durability()
    await submitted
    outcome = await dispatcher.wait("j1", WAIT_S)
    assert outcome is not None, "the submitter's wait missed the end that shared its flush"
    assert outcome["state"] == "succeeded"


async def test_a_wait_on_an_end_not_yet_durable_returns_once_it_is(dispatcher: Dispatcher, store: MemoryStore) -> None:
    agent, offer = await running_job(dispatcher, safe_to_repeat=True)
    await turns()
    store.hold_durability()
    agent.complete(offer)
    await turns()
    assert "j1" not in dispatcher.live, "premise: the attempt ended"
    waiting = asyncio.ensure_future(dispatcher.wait("j1", WAIT_S))
    await turns()
    assert not waiting.done(), "a wait returned an end that a power loss could still undo"
    store.release_durability()
    outcome = await waiting
    assert outcome is not None and outcome["state"] == "succeeded"


async def test_a_wait_on_a_queued_job_returns_at_its_end(dispatcher: Dispatcher, store: MemoryStore) -> None:
    await dispatcher.submit(new_job("j1"))
    waiting = asyncio.ensure_future(dispatcher.wait("j1", WAIT_S))
    await turns()
    assert not waiting.done(), "a job still queued was reported ended"
    agent = FakeAgent(dispatcher, "a")
    agent.connect(credit=1)
    offer = await agent.next(Offer)
    agent.accept(offer, safe_to_repeat=True)
    agent.complete(offer)
    outcome = await waiting
    assert outcome is not None and outcome["state"] == "succeeded"
