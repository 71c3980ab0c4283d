"""Persist, then acknowledge, in the Dispatcher against the in-memory store (DESIGN invariant 1).

The store's writes apply at once but become durable only when the test says so
(``hold_durability``/``release_durability``, a model of the flush to disk that the SQLite store
waits for): an ``ack``, a ``complete_ack`` and an ``offer`` must wait for that moment, and a
submission must not return before it. Each test first shows that the write happened (its
effect is readable), so what it checks is only the ordering.
"""

from __future__ import annotations

import asyncio

from dispatch_fakes import FakeAgent, new_job, running_job, turns

from bridgehead.control.dispatch import Dispatcher
from bridgehead.control.store.memory import MemoryStore
from bridgehead.protocol import Ack, CompleteAck, Offer


async def test_records_are_acknowledged_only_once_their_write_is_durable(
    dispatcher: Dispatcher, store: MemoryStore
) -> None:
    agent, offer = await running_job(dispatcher)
    store.hold_durability()
    agent.records(offer, 1, 10, 11)
    await turns()
    assert [b'{"n":10}', b'{"n":11}'] == [data for _seq, data in await store.records("j1", 1, 0, 10)]
    assert [] == agent.of(Ack), "an ack left before its records were durable"
    store.release_durability()
    ack = await agent.next(Ack)
    assert (offer.job_id, offer.attempt, 2) == (ack.job_id, ack.attempt, ack.seq)


async def test_a_completion_is_acknowledged_only_once_its_write_is_durable(
    dispatcher: Dispatcher, store: MemoryStore
) -> None:
    agent, offer = await running_job(dispatcher)
    store.hold_durability()
    agent.complete(offer, "succeeded")
    await turns()
    job = await store.get_job("j1")
    assert job is not None and job.state == "succeeded", "the completion was not even written"
    assert [] == agent.of(CompleteAck), "complete_ack left before the end of the job was durable"
    store.release_durability()
    await agent.next(CompleteAck)


async def test_an_offer_leaves_only_once_its_attempt_is_durable(dispatcher: Dispatcher, store: MemoryStore) -> None:
    """Else a control plane that died after the offer could give the same attempt number twice."""
    agent = FakeAgent(dispatcher, "a")
    agent.connect(credit=0)  # no credit yet: the job waits queued
    await dispatcher.submit(new_job("j1"))
    store.hold_durability()
    agent.link.credit = 1
    dispatcher.dispatch("c1")
    await turns()
    job = await store.get_job("j1")
    assert job is not None and (job.state, job.attempt) == ("running", 1), "the attempt was not even written"
    assert [] == agent.of(Offer), "the offer left before its attempt was durable"
    store.release_durability()
    offer = await agent.next(Offer)
    assert (offer.job_id, offer.attempt, offer.confirm_follows) == ("j1", 1, False)


async def test_a_submission_returns_only_once_the_job_is_durable(dispatcher: Dispatcher, store: MemoryStore) -> None:
    store.hold_durability()
    submitted = asyncio.ensure_future(dispatcher.submit(new_job("j1")))
    await turns()
    assert await store.get_job("j1") is not None, "the job was not even written"
    assert not submitted.done(), "the submission returned before the job was durable"
    store.release_durability()
    await asyncio.wait_for(submitted, 2)
