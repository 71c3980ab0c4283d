"""Persist, then acknowledge, at the level of the system calls: no acknowledgement leaves a
process before the flush that makes what it acknowledges durable (DESIGN invariant 1).

The control plane and the agent run as real processes under ``strace``, with their default
(power-loss-safe) settings. Over plain HTTP on loopback (the one place it is allowed) the
bytes on the sockets are readable: the control plane's ``201``, ``ack`` and ``complete_ack``,
the agent's ``accept``. For each, the test finds the write that put the acknowledged data
into the database's WAL, and requires a flush of that file that began after that write ended
and ended before the acknowledgement's socket write began.

The agent's ``complete`` is not an acknowledgement (it asks for one): a run safe to repeat
sends it once the journal holds it (a crash of the process forgets nothing), without waiting
for the disk, and is not accepted at all when it ends in the pass that would have carried
its accept; a run not safe to repeat sends it after a flush, like its accept
(``bridgehead.agent.outbox`` says why).

Each datum is found by bytes only it has: records padded to a length unique to their job, a
failure message that only the completion writes; a test that finds no such write fails
(the trace did not show what it was meant to prove), it does not pass vacuously.

One job is not safe to repeat (a REST ``POST`` to a local HTTP server): its offer leaves at
the commit of its attempt (``confirm_follows``), and the ``confirm`` its run waits for must
leave only after a flush that covers that commit.
"""

from __future__ import annotations

import secrets
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from bridgehead_testing.harness import Agent, ControlPlane, wait_connected
from bridgehead_testing.syscall_trace import (
    FLUSHES,
    Call,
    Sent,
    first_write,
    flush_between,
    parse,
    sent_messages,
    stop_traced,
    strace_command,
)

CONTROL_WAL = "control.db-wal"
AGENT_WAL = "journal.db-wal"
RECORDS = 3
SEQUENTIAL_JOBS = 3
CONCURRENT_JOBS = 6


def pad_size(index: int) -> int:
    return 900 + 7 * index  # a length of its own per job: its records' bytes are unique to it


def record_bytes(index: int, n: int) -> bytes:
    """How the echo plugin's record ``n`` of job ``index`` reads on disk (and only there)."""
    return b'{"n":%d,"pad":"%s"}' % (n, b"x" * pad_size(index))


@dataclass
class Job:
    id: str
    index: int
    failure: bytes = b""  # for the failing job: the text only its completion writes


@dataclass
class Traces:
    control: list[Call]
    agent: list[Call]
    jobs: list[Job]
    unsafe_job: str  # the id of the job not safe to repeat
    posts: list[str]  # the paths the local HTTP server was posted to

    def control_sent(self) -> list[Sent]:
        return sent_messages(self.control)

    def agent_sent(self) -> list[Sent]:
        return sent_messages(self.agent)


class PostTarget(BaseHTTPRequestHandler):
    """A local HTTP server noting each POST (what a job not safe to repeat changes)."""

    posts: list[str]

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.posts.append(self.path)
        self.send_response(201)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traces]:
    assert shutil.which("strace"), "strace is not installed (scripts/test installs it)"
    workdir = tmp_path_factory.mktemp("durability")
    control = ControlPlane(workdir, tls=False, heartbeat_s=5.0)
    control.wrapper = strace_command(workdir / "control.trace")
    posts: list[str] = []
    handler = type("Handler", (PostTarget,), {"posts": posts})
    target = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    profile = f'[connections.target]\nplugin = "rest"\nbase_url = "http://127.0.0.1:{target.server_port}"\n'
    agent = Agent(workdir, "traced-agent", [control.url], extra=profile)
    agent.wrapper = strace_command(workdir / "agent.trace")
    jobs: list[Job] = []
    unsafe_job = ""
    try:
        control.start()
        agent.enroll(control.enrollment_token())
        agent.start()
        api = control.api(control.token("operator"))
        wait_connected(api, ["traced-agent"], timeout=60)

        def run(index: int, fail: str | None = None, sleep_s: float = 0.0) -> Job:
            params: dict[str, Any] = {"count": RECORDS, "size": pad_size(index), "sleep_s": sleep_s}
            if fail:
                params["fail"] = fail
            job = api.submit("echo", params, max_attempts=1)
            done = api.wait_done(job["id"], timeout=120)
            assert done["state"] == ("failed" if fail else "succeeded"), done
            failure = f"(params.fail = {fail!r})".encode() if fail else b""
            return Job(job["id"], index, failure)

        # Still running when their accept leaves: those accepts are sent (see the docstring).
        jobs += [run(i, sleep_s=0.2) for i in range(SEQUENTIAL_JOBS)]
        code = f"trace_{secrets.token_hex(4)}"
        jobs.append(run(SEQUENTIAL_JOBS, fail=code))
        # Concurrent jobs: acknowledgements that share flushes (group commit) must keep the order too.
        with ThreadPoolExecutor(CONCURRENT_JOBS) as pool:
            first = SEQUENTIAL_JOBS + 1
            jobs += list(pool.map(run, range(first, first + CONCURRENT_JOBS)))
        post = api.submit("rest", {"connection": "target", "method": "POST", "path": "/unsafe", "json": {}})
        assert api.wait_done(post["id"], timeout=120)["state"] == "succeeded"
        unsafe_job = post["id"]
    finally:
        target.shutdown()
        target.server_close()
        if agent.proc is not None:
            stop_traced(agent.proc, 30)
        if control.proc is not None:
            stop_traced(control.proc, 30)
    control_calls = parse((workdir / "control.trace").read_text())
    yield Traces(control_calls, parse((workdir / "agent.trace").read_text()), jobs, unsafe_job, posts)


def _late(ack: Sent, data: Call, wal: str, calls: list[Call]) -> str | None:
    """Why ``ack`` left too early for ``data``, or None when a flush came between them."""
    if flush_between(calls, wal, data, ack.call) is not None:
        return None
    return f"{ack.message} left at event {ack.call.entry}, with no flush of {wal} after its write at {data.exit}"


def test_the_control_plane_answers_201_only_after_the_job_is_flushed(traces: Traces) -> None:
    answers = [c for c in traces.control if c.is_socket and c.data.startswith(b"HTTP/1.1 201")]
    late = []
    for job in traces.jobs:
        row = _job_row(traces.control, job)
        answer = next((c for c in answers if c.entry > row.exit and job.id.encode() in _response_of(c, traces)), None)
        assert answer is not None, f"no 201 for job {job.id} in the trace"
        if flush_between(traces.control, CONTROL_WAL, row, answer) is None:
            late.append(f"201 for {job.id} at event {answer.entry}, row written at {row.exit}, no flush between")
    assert late == []


def _job_row(calls: list[Call], job: Job) -> Call:
    """The write that stored the job: its params (as the store encodes them: with or without
    spaces after the separators) name its unique size."""
    spaced, tight = b'"size": %d' % pad_size(job.index), b'"size":%d' % pad_size(job.index)
    writes = [c for c in calls if c.path.endswith(CONTROL_WAL) and (spaced in c.data or tight in c.data)]
    assert writes, f"no write to the WAL holds job {job.id}'s params: the premise did not happen"
    return writes[0]


def _response_of(head: Call, traces: Traces) -> bytes:
    """A response's bytes: its head and the next write on the same socket (the body may go
    in a write of its own)."""
    following = [c for c in traces.control if c.path == head.path and c.entry > head.entry and c.is_socket]
    return head.data + (following[0].data if following else b"")


def test_the_control_plane_acks_records_only_after_they_are_flushed(traces: Traces) -> None:
    acks = [s for s in traces.control_sent() if s.message.get("type") == "ack"]
    late, checked = [], 0
    for job in traces.jobs:
        for ack in (a for a in acks if a.message["job_id"] == job.id):
            for seq in range(1, ack.message["seq"] + 1):
                data = first_write(traces.control, CONTROL_WAL, record_bytes(job.index, seq - 1))
                checked += 1
                if (why := _late(ack, data, CONTROL_WAL, traces.control)) is not None:
                    late.append(why)
    assert checked >= len(traces.jobs) * RECORDS, f"only {checked} acknowledged records in the trace"
    assert late == []


def test_the_control_plane_acks_a_completion_only_after_it_is_flushed(traces: Traces) -> None:
    (job,) = [j for j in traces.jobs if j.failure]
    stored = first_write(traces.control, CONTROL_WAL, job.failure)
    (ack,) = [
        s for s in traces.control_sent() if s.message.get("type") == "complete_ack" and s.message["job_id"] == job.id
    ]
    why = _late(ack, stored, CONTROL_WAL, traces.control)
    assert why is None, why


def test_the_agent_accepts_a_job_only_after_its_journal_is_flushed(traces: Traces) -> None:
    accepts = {s.message["job_id"]: s for s in traces.agent_sent() if s.message.get("type") == "accept"}
    running = [job.id for job in traces.jobs[:SEQUENTIAL_JOBS]] + [traces.unsafe_job]
    missing = set(running) - set(accepts)
    assert not missing, f"premise: jobs still running when accepted were accepted; {missing} were not"
    late = []
    for job_id in accepts:
        journaled = first_write(traces.agent, AGENT_WAL, job_id.encode())
        if (why := _late(accepts[job_id], journaled, AGENT_WAL, traces.agent)) is not None:
            late.append(why)
    assert late == []


def test_a_run_safe_to_repeat_reports_its_completion_once_journaled_not_waiting_for_the_disk(traces: Traces) -> None:
    """The failing echo job's completion leaves after the journal's write of it (a crash of
    the process cannot forget it), and jobs that ended at once were never accepted: their
    completion said it all, and the control plane took it (every job ended as it should)."""
    (job,) = [j for j in traces.jobs if j.failure]
    journaled = first_write(traces.agent, AGENT_WAL, job.failure)
    (complete,) = [
        s for s in traces.agent_sent() if s.message.get("type") == "complete" and s.message["job_id"] == job.id
    ]
    assert journaled.exit < complete.call.entry, "the completion left before the journal held it"
    accepted = {s.message["job_id"] for s in traces.agent_sent() if s.message.get("type") == "accept"}
    assert {j.id for j in traces.jobs[SEQUENTIAL_JOBS:]} - accepted, "premise: no job ended in its accept's pass"


def test_a_run_not_safe_to_repeat_reports_its_completion_after_its_accept_and_has_it_flushed(traces: Traces) -> None:
    """The completion follows the accept and the journal's write of it, and the flushing
    thread flushes that write (asked for as the completion leaves, waited on by no one)."""
    job = traces.unsafe_job
    (complete,) = [s for s in traces.agent_sent() if s.message.get("type") == "complete" and s.message["job_id"] == job]
    (accept,) = [s for s in traces.agent_sent() if s.message.get("type") == "accept" and s.message["job_id"] == job]
    assert accept.call.entry < complete.call.entry, "the completion overtook the accept"
    # The completion's commit: the last write of the job's row to the journal before it left.
    writes = [c for c in traces.agent if c.path.endswith(AGENT_WAL) and job.encode() in c.data]
    ended = [c for c in writes if c.exit < complete.call.entry and c.entry > accept.call.entry]
    assert ended, f"no write of job {job}'s end to the journal between its accept and its completion"
    # (The event loop's thread writes; the close at the end syncs on that thread too, so a
    # flush on another thread is the flushing thread's, asked for by the writer.)
    flushed = [
        c
        for c in traces.agent
        if c.name in FLUSHES and c.path.endswith(AGENT_WAL) and c.entry > ended[-1].exit and c.pid != ended[-1].pid
    ]
    assert flushed, "the completion of a run not safe to repeat was never flushed by the flushing thread"


def test_the_control_plane_confirms_a_run_not_safe_to_repeat_only_after_its_attempt_is_flushed(
    traces: Traces,
) -> None:
    job = traces.unsafe_job
    assert traces.posts == ["/unsafe"], "the job not safe to repeat did not run exactly once"
    sent = [s for s in traces.control_sent() if s.message.get("job_id") == job]
    (offer,) = [s for s in sent if s.message.get("type") == "offer"]
    assert offer.message.get("confirm_follows") is True, "premise: the offer left at its attempt's commit"
    # The attempt's commit: the last write of the job's row to the WAL before its offer left.
    rows = [c for c in traces.control if c.path.endswith(CONTROL_WAL) and job.encode() in c.data]
    attempt = [c for c in rows if c.exit < offer.call.entry]
    assert attempt, f"no write of job {job}'s attempt before its offer: the premise did not happen"
    (confirm,) = [s for s in sent if s.message.get("type") == "confirm"]
    why = _late(confirm, attempt[-1], CONTROL_WAL, traces.control)
    assert why is None, why
    # What made the confirm due: the agent accepted the job as not safe to repeat (a run that
    # waits for it; tests/unit/test_runner_confirm.py shows the agent's side of the wait).
    (accept,) = [s for s in traces.agent_sent() if s.message.get("type") == "accept" and s.message["job_id"] == job]
    assert accept.message.get("safe_to_repeat") is False
