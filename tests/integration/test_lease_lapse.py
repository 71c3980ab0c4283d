"""Leases end to end (DESIGN invariant 3): a real control plane; agents real or scripted.

A running job is leased to one agent and renewed by its heartbeats; a lease that lapses
requeues the job on another member of its cluster if attempts remain and the plugin is safe
to repeat, and fails it with ``agent_lost`` otherwise. The pure rules are unit-tested in
``tests/unit/dispatch/test_leases.py``, ``test_retry_policy.py`` and ``test_dispatcher_failures.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bridgehead_testing.harness import Agent, ControlPlane, wait_connected, wait_until
from bridgehead_testing.scripted_agent import Channel, Inbox, enroll, keepalive

AgentFactory = Callable[..., Agent]
ControlFactory = Callable[..., ControlPlane]


def test_a_job_longer_than_many_leases_runs_once_on_a_live_agent(
    control: ControlPlane, agent_factory: AgentFactory
) -> None:
    """With a 2 s lease (1 s heartbeats), a job that sends nothing for 4.5 s keeps its lease on
    the agent's heartbeats alone: one attempt, one session, never dropped as silent."""
    agent = agent_factory(control)
    api = control.api()
    wait_connected(api, ["agent-1"])
    # The job's length is the behaviour under test: it must outlast two leases without a record.
    job = api.submit("echo", {"sleep_s": 4.5, "count": 1}, max_attempts=3)
    done = api.wait_done(job["id"], timeout=30)
    assert ("succeeded", 1, "agent-1", 1) == (done["state"], done["attempt"], done["agent"], done["record_count"])
    # Premise: the job really ran for more than two leases.
    assert done["finished_at"] - done["started_at"] > 2 * 2.0
    assert 1 == agent.log_text().count("connected to"), agent.log_text()[-2000:]
    assert "dropping its session" not in control.log_text()


async def test_a_lapsed_lease_requeues_on_another_member_only_what_may_run_again(control: ControlPlane) -> None:
    """A scripted agent accepts three jobs and goes away (its connection closes) while another
    member of the cluster stays, with free slots. Once the leases lapse, the job safe to repeat
    with attempts left runs again as attempt 2 on the other member; the one not safe to repeat
    and the one on its last attempt fail with ``agent_lost`` and are offered to nobody."""
    api = control.api()
    holder_id, other_id = enroll(control, "holder"), enroll(control, "other")
    holder = await Channel.open(control.url, holder_id.context())
    await holder.handshake(holder_id, capacity=3)
    cases = {"requeued": (2, True), "not safe": (3, False), "last attempt": (1, True)}  # max_attempts, safe
    jobs = {
        (await asyncio.to_thread(api.submit, "echo", {"count": 1}, max_attempts=n))["id"]: case
        for case, (n, _safe) in cases.items()
    }
    inbox = Inbox(holder)
    other = None
    try:
        async with keepalive(holder):  # the holder is alive until it goes, however slow the machine
            for _ in cases:
                offer = await inbox.next("offer")
                ref = {"job_id": offer["job_id"], "attempt": offer["attempt"]}
                await holder.send({"type": "accept", **ref, "safe_to_repeat": cases[jobs[offer["job_id"]]][1]})
            # Only now does the other member connect: no first offer could have gone to it.
            other = await Channel.open(control.url, other_id.context())
            await other.handshake(other_id, capacity=3)
            # Premise: every job runs as attempt 1 on the holder (accepted: the accepts went
            # before the close, on the same connection, so it started there).
            running = {(j["state"], j["agent"], j["attempt"]) for j in map(api.job, jobs)}
            assert {("running", "holder", 1)} == running
        await holder.close()
        async with keepalive(other):

            def lapsed() -> dict[str, dict[str, Any]] | None:
                now = {jobs[i]: api.job(i) for i in jobs}
                waiting = any(j["attempt"] == 1 and j["state"] in ("queued", "running") for j in now.values())
                return None if waiting else now

            after = await asyncio.to_thread(wait_until, lapsed, 20, "the leases to lapse")
            offer = await Inbox(other).next("offer")
            requeued = await asyncio.to_thread(api.job, offer["job_id"])
    finally:
        await holder.close()
        if other is not None:
            await other.close()
    assert ("requeued", 2) == (jobs[offer["job_id"]], offer["attempt"])
    assert ("running", 2, "other") == (requeued["state"], requeued["attempt"], requeued["agent"])
    for case, why in (("not safe", "not safe to repeat"), ("last attempt", "no attempts left")):
        job = after[case]
        assert ("failed", "agent_lost", 1) == (job["state"], job["error"]["code"], job["attempt"]), case
        assert why in job["error"]["message"]
