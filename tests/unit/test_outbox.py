"""Unit tests of one pass of the agent's writer (bridgehead.agent.outbox): what goes out, in
which order, in which lane (at once, or once the journal's flush is done), and when the
journal must be committed first."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgehead.agent.journal import Journal
from bridgehead.agent.outbox import take_pass
from bridgehead.agent.runner import Attempt
from bridgehead.agent.stream import OutboundStream, SpoolBudget
from bridgehead.protocol import (
    Accept,
    AgentMessage,
    AgentSession,
    Challenge,
    Complete,
    Credit,
    Heartbeat,
    Hello,
    Progress,
    Records,
    ServerSession,
    Welcome,
)

MAX = 1 << 20


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.db")
    yield j
    j.close()


def open_sessions() -> tuple[ServerSession, AgentSession]:
    server, agent = ServerSession(MAX), AgentSession(MAX)
    agent.receive(server.send(Challenge(nonce="n" * 32)))
    server.receive(agent.send(Hello(agent="a", cluster="c", signature="x")))
    agent.receive(server.send(Welcome(session_id="s", heartbeat_s=5.0, lease_s=10.0, max_message_bytes=MAX)))
    return server, agent


def attempt(journal: Journal, job_id: str, safe_to_repeat: bool = True) -> Attempt:
    journal.add_job(job_id, 1, "echo", 0.0)
    stream = OutboundStream(
        job_id, 1, journal, SpoolBudget(MAX), window_records=100, window_bytes=MAX, wake=lambda: None
    )
    return Attempt(job_id, 1, "echo", stream, safe_to_repeat=safe_to_repeat)


def received(server: ServerSession, parts: list[bytes]) -> list[AgentMessage]:
    return [message for part in parts for message in server.receive(part)]


async def test_a_run_not_safe_to_repeat_keeps_everything_behind_its_flushed_accept(journal: Journal) -> None:
    """Its accept, records, progress and completion all wait for the flush, in that order
    (the control plane takes an attempt it has no accept for as one that never ran); credit
    goes at once."""
    server, session = open_sessions()
    job = attempt(journal, "j1", safe_to_repeat=False)
    await job.stream.put_many([b'{"n":1}', b'{"n":2}'])
    job.stream.progress(1, 2, "half")
    job.stream.finish("succeeded", None)
    control: deque[AgentMessage] = deque([Accept(job_id="j1", attempt=1), Credit(n=1)])
    ready = take_pass(control, [job], session, batch_records=100, batch_bytes=MAX)
    assert [Credit] == [type(m) for m in received(server, ready.now.parts)]
    assert [Accept, Records, Progress, Complete] == [type(m) for m in received(server, ready.gated.parts)]
    assert ready.flush and ready.sync and ready.commit and ready.gated.completes and not ready.now.completes
    assert not control


async def test_a_run_safe_to_repeat_that_ends_in_its_accepts_pass_is_not_accepted(journal: Journal) -> None:
    """Its completion says all the accept would: nothing of it waits for the disk, but the
    journal is committed before it leaves."""
    server, session = open_sessions()
    job = attempt(journal, "j1")
    await job.stream.put_many([b'{"n":1}', b'{"n":2}'])
    job.stream.finish("succeeded", None)
    control: deque[AgentMessage] = deque([Accept(job_id="j1", attempt=1), Credit(n=1)])
    ready = take_pass(control, [job], session, batch_records=100, batch_bytes=MAX)
    assert [Credit, Records, Complete] == [type(m) for m in received(server, ready.now.parts)]
    assert [] == ready.gated.parts
    assert ready.commit and not ready.flush and ready.now.completes


async def test_a_run_safe_to_repeat_still_running_is_accepted_after_the_flush(journal: Journal) -> None:
    server, session = open_sessions()
    job = attempt(journal, "j1")
    await job.stream.put_many([b'{"n":1}'])
    ready = take_pass(deque([Accept(job_id="j1", attempt=1)]), [job], session, batch_records=100, batch_bytes=MAX)
    assert [Accept] == [type(m) for m in received(server, ready.gated.parts)]
    assert [Records] == [type(m) for m in received(server, ready.now.parts)]
    assert ready.flush
    job.stream.finish("succeeded", None)
    later = take_pass(deque(), [job], session, batch_records=100, batch_bytes=MAX)
    assert [Complete] == [type(m) for m in received(server, later.now.parts)]
    assert later.commit and not later.flush and not later.sync, "a run safe to repeat asked for the disk"


async def test_the_completion_of_a_run_not_safe_to_repeat_asks_for_a_flush_and_waits_for_none(
    journal: Journal,
) -> None:
    """In a pass of its own (its accept long sent): gated, so it keeps behind any accept still
    to leave; a flush asked for, so the agent holds it durably soon."""
    server, session = open_sessions()
    job = attempt(journal, "j1", safe_to_repeat=False)
    job.stream.finish("succeeded", None)
    ready = take_pass(deque(), [job], session, batch_records=100, batch_bytes=MAX)
    assert [Complete] == [type(m) for m in received(server, ready.gated.parts)]
    assert ready.sync and ready.commit and ready.gated.completes
    assert not ready.flush, "a completion waited for the agent's disk"


async def test_a_completion_waits_while_records_remain_unsent(journal: Journal) -> None:
    """With a batch smaller than the output, the completion goes only in the pass that sends the last record."""
    server, session = open_sessions()
    job = attempt(journal, "j1")
    await job.stream.put_many([b'{"n":1}', b'{"n":2}', b'{"n":3}'])
    job.stream.finish("succeeded", None)
    first = take_pass(deque(), [job], session, batch_records=2, batch_bytes=MAX)
    assert [Records] == [type(m) for m in received(server, first.now.parts)]
    assert first.busy and not first.commit
    second = take_pass(deque(), [job], session, batch_records=2, batch_bytes=MAX)
    records, complete = received(server, second.now.parts)
    assert isinstance(records, Records) and 3 == records.seq
    assert isinstance(complete, Complete) and 3 == complete.record_count
    assert second.commit


async def test_a_pass_with_nothing_to_promise_needs_no_commit(journal: Journal) -> None:
    server, session = open_sessions()
    job = attempt(journal, "j1", safe_to_repeat=False)
    await job.stream.put_many([b'{"n":1}'])
    ready = take_pass(deque(), [job], session, batch_records=100, batch_bytes=MAX)
    assert [Records] == [type(m) for m in received(server, ready.gated.parts)]
    assert not ready.commit and not ready.flush and not ready.busy


async def test_a_pass_with_an_accept_is_flushed(journal: Journal) -> None:
    """An accept promises the job is journaled: its pass is committed and flushed before it is sent."""
    _server, session = open_sessions()
    ready = take_pass(deque([Accept(job_id="j1", attempt=1)]), [], session, batch_records=100, batch_bytes=MAX)
    assert ready.flush and ready.commit and len(ready.gated.parts) == 1
    assert not ready.gated.completes


async def test_a_pass_of_credit_and_heartbeats_needs_no_flush(journal: Journal) -> None:
    """Only an accept or a completion promises something on disk; other control frames do not
    wait for the journal."""
    _server, session = open_sessions()
    control: deque[AgentMessage] = deque([Credit(n=1), Heartbeat(running=[])])
    ready = take_pass(control, [], session, batch_records=100, batch_bytes=MAX)
    assert not ready.flush and not ready.commit and len(ready.now.parts) == 2
