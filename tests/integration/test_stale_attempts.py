"""Fencing end to end (DESIGN invariant 2): a real control plane, agents scripted frame by frame.

Records, progress and a completion for a stale attempt (after its job was requeued) and for
another agent's attempt are refused: the job's records are exactly its final attempt's, once,
and the stale completion does not end it. The pure rules are unit-tested in
``tests/unit/test_protocol_jobs.py`` and ``tests/unit/dispatch/test_dispatcher_fencing.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bridgehead_testing.harness import ControlPlane
from bridgehead_testing.scripted_agent import Channel, Inbox, enroll, keepalive

ControlFactory = Callable[..., ControlPlane]


def forged(ref: dict[str, Any], who: str) -> list[dict[str, Any]]:
    """Records (seq 1: what the control plane would take next), progress and a completion."""
    return [
        {"type": "records", **ref, "seq": 1, "records": [{"from": who}]},
        {"type": "progress", **ref, "done": 1, "total": 1, "message": who},
        {"type": "complete", **ref, "status": "succeeded", "record_count": 0},
    ]


async def test_frames_of_a_stale_attempt_and_of_another_agent_change_nothing(control_factory: ControlFactory) -> None:
    """Attempt 1 sends a record, fails retryably and is requeued as attempt 2 on the same agent;
    then attempt 1's records, progress and completion, and another agent's for attempt 2, are
    each answered ``abandon``: the job keeps running, shows no forged progress, and ends with
    attempt 2's records only."""
    control = control_factory(heartbeat_s=5.0)  # a 10 s lease: nothing lapses while the test talks
    api = control.api()
    holder_id, other_id = enroll(control, "holder"), enroll(control, "other")
    holder = await Channel.open(control.url, holder_id.context())
    other = await Channel.open(control.url, other_id.context())
    try:
        await holder.handshake(holder_id, capacity=1)
        await other.handshake(other_id, capacity=0)
        inbox, other_inbox = Inbox(holder), Inbox(other)
        async with keepalive(holder), keepalive(other):
            job = await asyncio.to_thread(api.submit, "echo", {"count": 1}, max_attempts=3)
            first = await inbox.next("offer")
            ref1 = {"job_id": job["id"], "attempt": 1}
            assert ref1 == {"job_id": first["job_id"], "attempt": first["attempt"]}
            await holder.send(
                {"type": "accept", **ref1, "safe_to_repeat": True},
                {"type": "records", **ref1, "seq": 1, "records": [{"from": "attempt 1"}]},
            )
            assert {**ref1, "seq": 1} == {k: v for k, v in (await inbox.next("ack")).items() if k != "type"}
            error = {"code": "flaky", "message": "try again", "retryable": True}
            await holder.send({"type": "complete", **ref1, "status": "failed", "record_count": 1, "error": error})
            await inbox.next("complete_ack")
            await holder.send({"type": "credit", "n": 1})
            second = await inbox.next("offer")
            ref2 = {"job_id": job["id"], "attempt": 2}
            # Premise: the job was requeued and runs again as attempt 2, on the same agent.
            assert ref2 == {"job_id": second["job_id"], "attempt": second["attempt"]}
            await holder.send({"type": "accept", **ref2, "safe_to_repeat": True})

            await holder.send(*forged(ref1, "stale attempt 1"))
            await other.send(*forged(ref2, "another agent"))
            # Records and completion are each answered abandon (progress is answered with nothing).
            stale = [await inbox.next("abandon") for _ in range(2)]
            foreign = [await other_inbox.next("abandon") for _ in range(2)]
            during = await asyncio.to_thread(api.job, job["id"])

            await holder.send(
                {"type": "records", **ref2, "seq": 1, "records": [{"from": "attempt 2", "n": 0}]},
                {"type": "records", **ref2, "seq": 2, "records": [{"from": "attempt 2", "n": 1}]},
            )
            while (await inbox.next("ack"))["seq"] < 2:  # one ack for both, or one each
                pass
            await holder.send({"type": "complete", **ref2, "status": "succeeded", "record_count": 2})
            await inbox.next("complete_ack")
    finally:
        await holder.close()
        await other.close()

    assert [ref1, ref1] == [{"job_id": a["job_id"], "attempt": a["attempt"]} for a in stale]
    assert [ref2, ref2] == [{"job_id": a["job_id"], "attempt": a["attempt"]} for a in foreign]
    assert ("running", 2, "holder", 0, None) == (
        during["state"],
        during["attempt"],
        during["agent"],
        during["record_count"],
        during["progress"],
    )
    done = await asyncio.to_thread(api.wait_done, job["id"], 20)
    assert ("succeeded", 2, "holder", 2) == (done["state"], done["attempt"], done["agent"], done["record_count"])
    assert [{"from": "attempt 2", "n": 0}, {"from": "attempt 2", "n": 1}] == await asyncio.to_thread(
        api.records, job["id"]
    )
