"""Reconnect resumes (DESIGN invariant 5): a real control plane; agents real or scripted.

After a reconnect the agent re-sends what was not acked, from the last acked sequence number,
and the control plane ignores what it already has. The pure rules are unit-tested in
``tests/unit/test_protocol_jobs.py``, ``tests/unit/test_stream.py`` and
``tests/unit/dispatch/test_dispatcher_fencing.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

from bridgehead_testing.harness import Agent, ControlPlane, wait_connected, wait_until
from bridgehead_testing.outages import CuttableProxy
from bridgehead_testing.scripted_agent import Channel, Inbox, enroll

AgentFactory = Callable[..., Agent]
ControlFactory = Callable[..., ControlPlane]


def rows(*ns: int) -> list[dict[str, Any]]:
    return [{"n": n} for n in ns]


async def test_after_a_reconnect_the_control_plane_ignores_records_it_already_has(
    control_factory: ControlFactory,
) -> None:
    """An agent sends records 1-3 (acked), loses its connection and says hello again holding the
    attempt: the welcome continues it from seq 3. The agent, whose ack was lost, re-sends from
    seq 2; the control plane keeps only 4 and 5 of that batch, so the job's records are 1-5, once."""
    control = control_factory(heartbeat_s=5.0)  # a 10 s lease: the attempt outlives the reconnect
    api = control.api()
    identity = enroll(control, "resumer")
    ch = await Channel.open(control.url, identity.context())
    try:
        await ch.handshake(identity, capacity=1)
        job = await asyncio.to_thread(api.submit, "echo", {"count": 5})
        first = Inbox(ch)
        offer = await first.next("offer")
        ref = {"job_id": job["id"], "attempt": offer["attempt"]}
        await ch.send(
            {"type": "accept", **ref, "safe_to_repeat": True},
            {"type": "records", **ref, "seq": 1, "records": rows(1, 2, 3)},
        )
        assert 3 == (await first.next("ack"))["seq"]
    finally:
        await ch.close()

    ch = await Channel.open(control.url, identity.context())
    try:
        held = {**ref, "state": "running", "next_seq": 4}
        welcome = await ch.handshake(identity, capacity=0, jobs=[held])
        inbox = Inbox(ch)
        await ch.send({"type": "records", **ref, "seq": 2, "records": rows(2, 3, 4, 5)})
        ack = await inbox.next("ack")
        await ch.send({"type": "complete", **ref, "status": "succeeded", "record_count": 5})
        await inbox.next("complete_ack")
    finally:
        await ch.close()
    assert [{**ref, "action": "continue", "acked_seq": 3}] == welcome["resume"]
    assert 5 == ack["seq"]
    done = await asyncio.to_thread(api.wait_done, job["id"], 20)
    assert ("succeeded", 1, 5) == (done["state"], done["attempt"], done["record_count"])
    assert rows(1, 2, 3, 4, 5) == await asyncio.to_thread(api.records, job["id"])


class LossyProxy(CuttableProxy):
    """A cuttable proxy that can also lose what is in flight, as a network partition does
    before either end notices: while ``losing``, bytes are read and dropped both ways (those
    from the agent counted in ``lost_from_agent``)."""

    def __init__(self, target_port: int, scheme: str) -> None:
        super().__init__(target_port, scheme)
        self.losing = False
        self.lost_from_agent = 0

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        from_agent = src.getpeername() != self.target
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not self.losing:
                    dst.sendall(data)
                elif from_agent:
                    self.lost_from_agent += len(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def test_a_reconnect_resumes_the_attempt_from_its_last_ack(
    control_factory: ControlFactory, agent_factory: AgentFactory
) -> None:
    """A real agent's records are lost in flight (unacknowledged), then its connection is cut;
    it reconnects at once and the same attempt goes on from its last ack, re-sending the lost
    records: attempt 1, every record once, in order."""
    control = control_factory(heartbeat_s=5.0)  # a 10 s lease: the attempt outlives the reconnect
    proxy = LossyProxy(control.port, scheme="https")
    try:
        agent = agent_factory(control, urls=[proxy.url])
        api = control.api()
        wait_connected(api, ["agent-1"])
        job = api.submit("echo", {"count": 200, "interval_s": 0.01}, max_attempts=3)
        wait_until(lambda: api.job(job["id"])["record_count"] > 20, 20, "records streaming")
        proxy.losing = True
        # Premise: records the agent sent never reached the control plane (a heartbeat is ~100 bytes).
        wait_until(lambda: proxy.lost_from_agent > 2_000, 20, "records lost in flight")
        proxy.cut()
        proxy.losing = False
        proxy.restore()
        done = api.wait_done(job["id"], timeout=30)
        log = agent.log_text()
    finally:
        proxy.close()
    # Premise: the agent did reconnect, holding the running attempt.
    assert 2 == log.count("connected to"), log[-3000:]
    assert "1 job(s) resumed" in log, log[-3000:]
    assert ("succeeded", 1, 200) == (done["state"], done["attempt"], done["record_count"])
    assert [r["n"] for r in api.records(job["id"])] == list(range(200))
