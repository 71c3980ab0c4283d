"""What becomes of attempts that fail, lose their agent or run out of time, in the Dispatcher
against the in-memory store: retries, lapsed leases, timeouts and a control-plane restart."""

from __future__ import annotations

import time

from dispatch_fakes import Ends, FakeAgent, new_job

from bridgehead.control.dispatch import Dispatcher, RetryPolicy
from bridgehead.control.dispatch.leases import TIMEOUT_GRACE_S
from bridgehead.control.metrics import Metrics
from bridgehead.control.store.memory import MemoryStore
from bridgehead.protocol import Abandon, CompleteAck, ErrorInfo, HeldJob, Offer, Reject


async def test_a_retryable_failure_runs_again_until_attempts_run_out(dispatcher: Dispatcher) -> None:
    """max_attempts bounds the retries of a safe-to-repeat job; the last failure is the job's."""
    agent = FakeAgent(dispatcher, "a")
    ends = Ends(dispatcher)
    agent.connect(credit=3)
    await dispatcher.submit(new_job("j1", max_attempts=2))
    first = await agent.next(Offer)
    agent.accept(first, safe_to_repeat=True)
    agent.fail(first, "source_down", retryable=True)
    second = await agent.next(Offer, after=1)
    assert 2 == second.attempt
    await agent.next(CompleteAck)  # the retry is on record before its completion is acknowledged
    agent.accept(second, safe_to_repeat=True)
    agent.fail(second, "source_down", retryable=True)
    job = await ends.of("j1")
    assert ("failed", "source_down", 2) == (job.state, job.error_code, job.attempt)


async def test_a_started_job_not_safe_to_repeat_is_not_retried(dispatcher: Dispatcher) -> None:
    agent = FakeAgent(dispatcher, "a")
    ends = Ends(dispatcher)
    agent.connect(credit=3)
    await dispatcher.submit(new_job("j1", max_attempts=3))
    offer = await agent.next(Offer)
    agent.accept(offer, safe_to_repeat=False)
    agent.fail(offer, "source_down", retryable=True)
    job = await ends.of("j1")
    assert ("failed", 1) == (job.state, job.attempt)
    assert 1 == len(agent.of(Offer))


async def test_a_retryable_refusal_goes_to_another_agent(dispatcher: Dispatcher) -> None:
    a, b = FakeAgent(dispatcher, "a"), FakeAgent(dispatcher, "b")
    a.connect(credit=1)
    await dispatcher.submit(new_job("j1", max_attempts=2))
    offer = await a.next(Offer)
    b.connect(credit=1)
    error = ErrorInfo(code="agent_draining", retryable=True)
    a.say(Reject(job_id=offer.job_id, attempt=offer.attempt, error=error))
    assert 2 == (await b.next(Offer)).attempt


async def test_an_expired_lease_requeues_an_attempt_that_had_not_started(dispatcher: Dispatcher) -> None:
    a, b = FakeAgent(dispatcher, "a"), FakeAgent(dispatcher, "b")
    a.connect(credit=1)
    await dispatcher.submit(new_job("j1", max_attempts=3))
    await a.next(Offer)
    b.connect(credit=1)
    later = time.monotonic() + dispatcher.lease_s + 1
    b.link.last_seen = later
    dispatcher.check_leases(later)
    assert a.closed is not None and 4005 == a.closed[0]
    retry = await b.next(Offer)
    assert (2, "b") == (retry.attempt, retry.agent)


async def test_a_lease_holds_while_its_agent_is_heard_from(dispatcher: Dispatcher) -> None:
    agent = FakeAgent(dispatcher, "a")
    agent.connect(credit=1)
    await dispatcher.submit(new_job("j1"))
    await agent.next(Offer)
    later = time.monotonic() + dispatcher.lease_s + 1
    agent.link.last_seen = later
    dispatcher.check_leases(later)
    assert agent.closed is None
    assert 1 == dispatcher.live["j1"].attempt


async def test_an_expired_lease_fails_a_started_job_not_safe_to_repeat(dispatcher: Dispatcher) -> None:
    agent = FakeAgent(dispatcher, "a")
    ends = Ends(dispatcher)
    agent.connect(credit=1)
    await dispatcher.submit(new_job("j1", max_attempts=3))
    agent.accept(await agent.next(Offer), safe_to_repeat=False)
    dispatcher.check_leases(time.monotonic() + dispatcher.lease_s + 1)
    job = await ends.of("j1")
    assert ("failed", "agent_lost") == (job.state, job.error_code)
    assert "not safe to repeat" in (job.error_message or "")


async def test_a_job_past_its_timeout_and_grace_is_abandoned_and_fails(dispatcher: Dispatcher) -> None:
    """The agent enforces the timeout; the control plane steps in only after the grace."""
    agent = FakeAgent(dispatcher, "a")
    ends = Ends(dispatcher)
    agent.connect(credit=1)
    await dispatcher.submit(new_job("j1", timeout_s=60.0))
    offer = await agent.next(Offer)
    started = dispatcher.live["j1"].started
    agent.link.last_seen = started + 60.0 + TIMEOUT_GRACE_S
    dispatcher.check_leases(started + 60.0 + TIMEOUT_GRACE_S)
    assert "j1" in dispatcher.live  # within the grace
    agent.link.last_seen = started + 60.1 + TIMEOUT_GRACE_S
    dispatcher.check_leases(started + 60.1 + TIMEOUT_GRACE_S)
    abandon = await agent.next(Abandon)
    assert (offer.job_id, offer.attempt, "timed out") == (abandon.job_id, abandon.attempt, abandon.reason)
    job = await ends.of("j1")
    assert ("failed", "timeout") == (job.state, job.error_code)


async def test_a_restart_rebuilds_queues_and_leases_from_the_store(dispatcher: Dispatcher, store: MemoryStore) -> None:
    """What was on record survives: the running attempt may continue, the queued job is offered."""
    agent = FakeAgent(dispatcher, "a")
    agent.connect(credit=1)
    await dispatcher.submit(new_job("running", max_attempts=3))
    offer = await agent.next(Offer)
    agent.records(offer, 1, 1)
    await dispatcher.submit(new_job("queued"))
    await store.close()
    restarted = Dispatcher(store.reopen(), Metrics(), heartbeat_s=5.0, retry=RetryPolicy(base_s=0.0))
    await restarted.start()
    try:
        assert ["queued"] == list(restarted.queues.queued)
        assert restarted.live["running"].lease_expires > time.monotonic() + restarted.lease_s
        back = FakeAgent(restarted, "a")
        (verdict,) = back.connect(credit=1, jobs=[HeldJob(job_id="running", attempt=1, state="running", next_seq=2)])
        assert ("continue", 1) == (verdict.action, verdict.acked_seq)
        assert "queued" == (await back.next(Offer)).job_id
    finally:
        await restarted.stop()
