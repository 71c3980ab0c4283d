"""An attempt the agent holds when it says hello counts as accepted, whether or not its
accept arrived: the agent journaled it, so it may have started. The agent's ``HeldJob`` says
whether it is safe to repeat.

The gap this closes: an agent that journals a job, starts it (a run not safe to repeat
starts once its acceptance is flushed, when the offer was durable) and dies before its
accept leaves; restarted, it reports the attempt ``lost``. Taken for an attempt that never
ran, it would be offered again: a second run of a job not safe to repeat. Each test checks
its premise (offered, no accept) before the verdict.
"""

from __future__ import annotations

import asyncio

import pytest
from dispatch_fakes import Ends, FakeAgent, new_job

from bridgehead.control.dispatch import Dispatcher
from bridgehead.control.store.memory import MemoryStore
from bridgehead.protocol import HeldJob, Offer


async def offered_not_accepted(dispatcher: Dispatcher) -> Offer:
    agent = FakeAgent(dispatcher, "a")
    agent.connect(credit=1)
    await dispatcher.submit(new_job("j1", max_attempts=3))
    offer = await agent.next(Offer)
    live = dispatcher.live["j1"]
    assert not live.accepted and live.attempt == 1, "premise: offered, its accept never came"
    dispatcher.detach(agent.link)  # the agent died with the accept unsent
    return offer


@pytest.mark.parametrize("safe", [False, None])
async def test_a_lost_attempt_whose_accept_never_came_is_not_run_again_unless_safe(
    dispatcher: Dispatcher, store: MemoryStore, safe: bool | None
) -> None:
    """Not safe to repeat (or not said, by an older agent): it fails ``agent_lost``."""
    ends = Ends(dispatcher)
    offer = await offered_not_accepted(dispatcher)
    restarted = FakeAgent(dispatcher, "a")
    restarted.connect(credit=1, jobs=[HeldJob(job_id="j1", attempt=offer.attempt, state="lost", safe_to_repeat=safe)])
    job = await ends.of("j1")
    assert (job.state, job.error_code, job.attempt) == ("failed", "agent_lost", 1)
    await asyncio.sleep(0)
    assert [] == restarted.of(Offer), "a job that may have run, not safe to repeat, was offered again"


async def test_a_lost_attempt_safe_to_repeat_runs_again(dispatcher: Dispatcher, store: MemoryStore) -> None:
    offer = await offered_not_accepted(dispatcher)
    restarted = FakeAgent(dispatcher, "a")
    restarted.connect(credit=1, jobs=[HeldJob(job_id="j1", attempt=offer.attempt, state="lost", safe_to_repeat=True)])
    again = await restarted.next(Offer)
    assert (again.job_id, again.attempt) == ("j1", 2)


async def test_a_held_attempt_is_stored_as_accepted(dispatcher: Dispatcher, store: MemoryStore) -> None:
    """Continued after a reconnect, it is on record as accepted (another node adopting it
    reads that), with the safety the agent said."""
    offer = await offered_not_accepted(dispatcher)
    back = FakeAgent(dispatcher, "a")
    [verdict] = back.connect(jobs=[HeldJob(job_id="j1", attempt=offer.attempt, state="running", safe_to_repeat=False)])
    assert verdict.action == "continue"
    for _ in range(20):
        await asyncio.sleep(0)
    job = await store.get_job("j1")
    assert job is not None and job.accepted and not job.safe_to_repeat


async def test_an_agent_claiming_another_agents_attempt_changes_nothing(
    dispatcher: Dispatcher, store: MemoryStore
) -> None:
    """A hostile (or confused) enrolled agent lists, in its hello, an attempt offered to
    another agent, lost and "safe to repeat": the attempt stays the other agent's, running,
    neither accepted nor retried, in memory and in the store."""
    offer = await offered_not_accepted(dispatcher)
    intruder = FakeAgent(dispatcher, "b")
    [verdict] = intruder.connect(
        credit=1, jobs=[HeldJob(job_id="j1", attempt=offer.attempt, state="lost", safe_to_repeat=True)]
    )
    assert verdict.action == "abandon"
    for _ in range(20):
        await asyncio.sleep(0)
    live = dispatcher.live["j1"]
    assert (live.agent, live.attempt, live.accepted) == ("a", 1, False)
    job = await store.get_job("j1")
    assert job is not None and (job.state, job.agent, job.attempt) == ("running", "a", 1)
    assert [] == intruder.of(Offer)
