"""Per-agent bounds in the Dispatcher against the in-memory store (DESIGN invariant 7): an
agent's credit, whatever it asks for, never exceeds ``max_credit`` less what it runs."""

from __future__ import annotations

from dispatch_fakes import Ends, FakeAgent, new_job

from bridgehead.control.dispatch import Dispatcher
from bridgehead.protocol import Credit, Offer


async def test_credit_is_capped_at_max_credit_less_what_the_agent_runs(dispatcher: Dispatcher) -> None:
    """Asking for 1000 slots gets 3 (max_credit), none more while 3 run, one per job finished."""
    dispatcher.max_credit = 3
    ends = Ends(dispatcher)
    agent = FakeAgent(dispatcher, "a")
    agent.connect()
    for i in range(5):
        await dispatcher.submit(new_job(f"j{i}"))
    agent.say(Credit(n=1000))
    third = await agent.next(Offer, after=2)
    assert (3, 0) == (len(agent.of(Offer)), agent.link.credit)
    agent.say(Credit(n=1000))  # while it runs three: nothing more
    assert 0 == agent.link.credit
    agent.accept(third)
    agent.complete(third)
    assert "succeeded" == (await ends.of(third.job_id)).state
    agent.say(Credit(n=1000))
    fourth = await agent.next(Offer, after=3)
    assert (4, 0) == (len(agent.of(Offer)), agent.link.credit)
    assert third.job_id != fourth.job_id
