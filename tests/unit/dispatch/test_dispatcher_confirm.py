"""Offers sent at their commit (``Offer.confirm_follows``) and the ``Confirm`` that follows,
in the Dispatcher against the in-memory store with its flush held (``hold_durability``, a
model of the fdatasync the SQLite store waits for).

An agent whose hello lists the ``confirm`` feature gets its offer as soon as the attempt is
committed, so the control plane's flush and the agent's journal flush run side by side. A
power loss before the control plane's flush could forget the attempt and offer the job
again, so a run not safe to repeat waits for ``Confirm``, which must leave only once the
attempt is durable *and* the agent has accepted the job as not safe to repeat; never for a
run safe to repeat. Each test shows its premise (the attempt is written) before asserting
on what was sent.
"""

from __future__ import annotations

from dispatch_fakes import FakeAgent, new_job, turns

from bridgehead.control.dispatch import Dispatcher
from bridgehead.control.store.memory import MemoryStore
from bridgehead.protocol import CompleteAck, Confirm, HeldJob, Offer


async def offered_at_commit(dispatcher: Dispatcher, store: MemoryStore) -> tuple[FakeAgent, Offer]:
    """A job offered to an agent that confirms, while the store's flush is held."""
    agent = FakeAgent(dispatcher, "a", confirms=True)
    agent.connect(credit=0)
    await dispatcher.submit(new_job("j1"))
    store.hold_durability()
    agent.link.credit = 1
    dispatcher.dispatch("c1")
    offer = await agent.next(Offer)
    job = await store.get_job("j1")
    assert job is not None and (job.state, job.attempt, job.agent) == ("running", 1, "a"), "attempt not written"
    assert offer.confirm_follows, "an offer sent before its attempt is durable must say a Confirm follows"
    return agent, offer


async def test_the_offer_leaves_at_the_commit_and_the_confirm_only_after_the_flush(
    dispatcher: Dispatcher, store: MemoryStore
) -> None:
    agent, offer = await offered_at_commit(dispatcher, store)
    agent.accept(offer, safe_to_repeat=False)
    await turns()
    assert [] == agent.of(Confirm), "confirmed before the attempt was durable"
    store.release_durability()
    confirm = await agent.next(Confirm)
    assert (confirm.job_id, confirm.attempt) == (offer.job_id, offer.attempt)
    await turns()
    assert 1 == len(agent.of(Confirm))


async def test_the_confirm_waits_for_the_acceptance_as_well(dispatcher: Dispatcher, store: MemoryStore) -> None:
    agent, offer = await offered_at_commit(dispatcher, store)
    store.release_durability()
    await turns()
    assert [] == agent.of(Confirm), "confirmed before the agent said whether the run is safe to repeat"
    agent.accept(offer, safe_to_repeat=False)
    await agent.next(Confirm)


async def test_a_run_safe_to_repeat_gets_no_confirm(dispatcher: Dispatcher, store: MemoryStore) -> None:
    agent, offer = await offered_at_commit(dispatcher, store)
    agent.accept(offer, safe_to_repeat=True)
    store.release_durability()
    agent.complete(offer)
    await agent.next(CompleteAck)  # the attempt went all the way: every answer was sent
    assert [] == agent.of(Confirm)


async def test_an_agent_without_the_feature_gets_a_durable_offer(dispatcher: Dispatcher, store: MemoryStore) -> None:
    agent = FakeAgent(dispatcher, "a")  # an older agent: its hello lists no features
    agent.connect(credit=0)
    await dispatcher.submit(new_job("j1"))
    store.hold_durability()
    agent.link.credit = 1
    dispatcher.dispatch("c1")
    await turns()
    assert [] == agent.of(Offer), "an agent that would not wait was offered a job before its attempt was durable"
    store.release_durability()
    offer = await agent.next(Offer)
    assert not offer.confirm_follows
    agent.accept(offer, safe_to_repeat=False)
    await turns()
    assert [] == agent.of(Confirm)


async def test_a_welcome_that_continues_the_attempt_stands_for_its_confirm(
    dispatcher: Dispatcher, store: MemoryStore
) -> None:
    """The session drops before the attempt is durable; the agent comes back holding it. The
    welcome's "continue" follows a durable write (the gateway's ``agent_seen``), so it
    confirms the attempt, and no stray Confirm follows on the new session."""
    agent, offer = await offered_at_commit(dispatcher, store)
    agent.accept(offer, safe_to_repeat=False)
    dispatcher.detach(agent.link)
    store.release_durability()
    await turns()
    again = FakeAgent(dispatcher, "a", confirms=True)
    [verdict] = again.connect(jobs=[HeldJob(job_id=offer.job_id, attempt=offer.attempt, state="running")])
    assert (verdict.job_id, verdict.attempt, verdict.action) == (offer.job_id, offer.attempt, "continue")
    again.accept(offer, safe_to_repeat=False)  # even a repeated acceptance sends none
    await turns()
    assert [] == again.of(Confirm)
