"""A hostile enrolled agent affects only the jobs and attempts it holds: real processes.

The control plane runs as a real process; the hostile agent is scripted frame by frame
(``bridgehead_testing.scripted_agent``, or a bare TLS socket with hand-written websocket frames where
even the websockets library's buffering would hide what the server does); where a healthy
agent is needed beside it, that is a real agent process running the ``echo`` plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
from bridgehead_testing.harness import Agent, Api, ControlPlane, scaled, urlopen, wait_connected, wait_until
from bridgehead_testing.scripted_agent import Channel, Inbox, ScriptedIdentity, enroll, keepalive
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

AgentFactory = Callable[..., Agent]
ControlFactory = Callable[..., ControlPlane]
SUBPROTOCOL = "bridgehead.v1"
MiB = 1024 * 1024


# --- helpers ------------------------------------------------------------------------------------


class CountingHttpServer:
    """A loopback HTTP server that counts every connection made to it (and serves a schema)."""

    def __init__(self) -> None:
        counter = self
        self.connections = 0
        self.requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                counter.requests.append(self.path)
                body = b'{"type": "object"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/schema+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                counter.connections += 1
                return True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HealthProbe(threading.Thread):
    """Polls ``/healthz`` until stopped, keeping how long each answer took (inf: no answer)."""

    def __init__(self, control: ControlPlane) -> None:
        super().__init__(daemon=True)
        self.url = control.url + "/healthz"
        self.latencies: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            started = time.monotonic()
            try:
                with urlopen(self.url, timeout=scaled(5)) as resp:
                    ok = resp.status == 200 and json.loads(resp.read())["status"] == "ok"
            except (OSError, ValueError):
                ok = False
            self.latencies.append(time.monotonic() - started if ok else float("inf"))
            self.halt.wait(0.05)

    def stop(self) -> list[float]:
        self.halt.set()
        self.join(scaled(10))
        return self.latencies


class EchoLoop(threading.Thread):
    """Runs small echo jobs one after another until stopped; keeps each job's final view."""

    def __init__(self, api: Api, count: int = 20) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.count = count
        self.jobs: list[dict[str, Any]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            job = self.api.submit("echo", {"count": self.count})
            self.jobs.append(self.api.wait_done(job["id"], timeout=30))

    def stop(self) -> list[dict[str, Any]]:
        self.halt.set()
        self.join(scaled(40))
        return self.jobs


def protocol_errors(control: ControlPlane, code: str) -> float:
    """``bridgehead_protocol_errors_total{code=...}`` as ``/metrics`` says now (0 if absent)."""
    text = control.metrics()
    match = re.search(rf'^bridgehead_protocol_errors_total\{{code="{code}"\}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def rss(control: ControlPlane) -> int:
    assert control.proc is not None
    return int(psutil.Process(control.proc.pid).memory_info().rss)


async def blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking harness call without stopping the event loop (the scripted agent's)."""
    return await asyncio.to_thread(fn, *args, **kwargs)


class RawChannel:
    """The agent channel over a bare TLS socket, websocket frames encoded by hand.

    It reads only when asked to and its socket's receive buffer is tiny, so whatever the
    control plane sends beyond that stays on the control plane's side of the connection.
    """

    def __init__(self, control: ControlPlane, identity: ScriptedIdentity, rcvbuf: int = 4096) -> None:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
        raw.settimeout(scaled(10))
        raw.connect(("127.0.0.1", control.port))
        self.sock = identity.context().wrap_socket(raw, server_hostname="127.0.0.1")
        self.identity = identity
        self.binding = hashlib.sha256(self.sock.getpeercert(binary_form=True) or b"").hexdigest()
        uri = parse_uri(f"wss://127.0.0.1:{control.port}/api/v1/agent/connect")
        self.protocol = ClientProtocol(uri, subprotocols=[Subprotocol(SUBPROTOCOL)], max_size=None)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        self.received: list[list[dict[str, Any]]] = []

    def _flush(self) -> None:
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def recv(self) -> list[dict[str, Any]]:
        while not self.received:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the control plane")
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY):
                    decoded = json.loads(bytes(event.data))
                    self.received.append(decoded if isinstance(decoded, list) else [decoded])
        return self.received.pop(0)

    def send(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        self._flush()

    def encoded(self, message: dict[str, Any], times: int) -> bytes:
        """``times`` masked frames of ``message``, ready to write (and not written)."""
        for _ in range(times):
            self.protocol.send_text(json.dumps(message).encode())
        return b"".join(self.protocol.data_to_send())

    def handshake(self, **hello: Any) -> dict[str, Any]:
        [challenge] = self.recv()
        assert "challenge" == challenge["type"], challenge
        self.send(
            {
                "type": "hello",
                "agent": self.identity.name,
                "cluster": self.identity.cluster,
                "signature": self.identity.sign_hello(challenge["nonce"], self.binding),
                **hello,
            }
        )
        [welcome, *_rest] = self.recv()
        assert "welcome" == welcome["type"], welcome
        self.sock.settimeout(None)  # from here on it only writes, blocking while the server reads
        return welcome

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class Flood(threading.Thread):
    """Writes ``blob`` to the channel over and over, never reading, until the writes fail or
    ``seconds`` pass; counts the bytes written and when (if) the connection broke."""

    def __init__(self, channel: RawChannel, blob: bytes, seconds: float) -> None:
        super().__init__(daemon=True)
        self.channel = channel
        self.blob = blob
        self.seconds = seconds
        self.sent = 0
        self.started = 0.0
        self.broken_after: float | None = None

    def run(self) -> None:
        self.started = time.monotonic()
        try:
            while time.monotonic() - self.started < self.seconds:
                view = memoryview(self.blob)
                while view:  # send(), not sendall(): what went out before a drop still counts
                    # In 1 KiB pieces: a write the server cuts off half-way raises and counts
                    # nothing, so pieces smaller than the flood it detects keep the count true.
                    written = self.channel.sock.send(view[:1024])
                    self.sent += written
                    view = view[written:]
        except OSError:
            self.broken_after = time.monotonic() - self.started


# --- 1. published schemas are never fetched -------------------------------------------------------


async def test_remote_refs_in_published_schemas_are_never_fetched(
    control_factory: ControlFactory, agent_factory: AgentFactory
) -> None:
    """Schemas with http, file and meta-schema refs, and one over max_schema_bytes, published on
    20 reconnects, open no connection and leave the API and another agent's job unharmed."""
    target = CountingHttpServer()
    control = control_factory(heartbeat_s=1.0, max_schema_bytes=64 * 1024)
    api = control.api()
    agent_factory(control, "healthy")
    await blocking(wait_connected, api, ["healthy"])
    identity = enroll(control, "evil-agent")
    base = f"http://127.0.0.1:{target.port}"
    huge = {"properties": {f"p{i}": {"$ref": f"{base}/p{i}.json"} for i in range(30_000)}}

    def plugins(i: int) -> list[dict[str, Any]]:
        # A distinct schema on every connection, so that each one is compiled afresh.
        return [
            {"name": "evil", "version": "1", "params_schema": {"$ref": f"{base}/schema.json?{i}"}},
            {"name": "evil-meta", "params_schema": {"$schema": f"{base}/meta.json?{i}", "type": "object"}},
            {"name": "evil-file", "params_schema": {"properties": {"a": {"$ref": f"file:///etc/passwd#{i}"}}}},
            {"name": "evil-huge", "params_schema": huge},
        ]

    rounds = 20
    probe = HealthProbe(control)
    probe.start()
    echo: asyncio.Future[dict[str, Any]] | None = None
    try:
        for i in range(rounds):
            if i == rounds // 2:  # a job for the healthy agent, submitted in the middle of it all
                echo = asyncio.ensure_future(blocking(lambda: api.wait_done(api.submit("echo", {"count": 10})["id"])))
            ch = await Channel.open(control.url, identity.context())
            try:
                await ch.handshake(identity, capacity=0, plugins=plugins(i))
            finally:
                await ch.close()
        log = control.log_text
        # One thread compiles the schemas in the order published, evil-file's last in each hello.
        refused_file = "not followed (file:///etc/passwd)"
        await blocking(wait_until, lambda: log().count(refused_file) >= rounds, 20, "the schemas compiled")
        ch = await Channel.open(control.url, identity.context())
        try:
            await ch.handshake(identity, capacity=0, plugins=plugins(0))
            status, body = await blocking(api.request, "POST", "/api/v1/jobs", {"plugin": "evil", "params": {"a": 1}})
        finally:
            await ch.close()
        assert echo is not None
        job = await echo
    finally:
        latencies = probe.stop()
        target.close()
    # Premise: every schema reached the compiler (or was too big for it) and the file refs were refused.
    assert rounds == log().count(refused_file)
    huge_skipped = r"plugin evil-huge's params schema is \d+ bytes, over 65536: not compiled"
    assert (rounds + 1, 0) == (
        len(re.findall(huge_skipped, log())),
        log().count("evil-huge's params schema is refused"),
    )
    assert (rounds, rounds) == (log().count(f"not followed ({base}/schema.json?"), log().count("Unknown meta-schema"))
    assert (0, []) == (target.connections, target.requests)
    assert status in (201, 400), (status, body)
    assert ("succeeded", "healthy", 10) == (job["state"], job["agent"], job["record_count"])
    assert len(latencies) >= 10, latencies
    # Compiling on the event loop would stall probe after probe; one slow answer is this
    # shared machine's noise (a CI run saw one), not a blocked loop.
    assert sum(latency >= scaled(1) for latency in latencies) <= 1, latencies


# --- 2. an agent that floods and never reads -------------------------------------------------------


def flood_setup(
    control_factory: ControlFactory, agent_factory: AgentFactory, **server: Any
) -> tuple[ControlPlane, RawChannel]:
    control = control_factory(heartbeat_s=1.0, **server)
    agent_factory(control, "healthy")
    wait_connected(control.api(), ["healthy"])
    channel = RawChannel(control, enroll(control, "flooder"))
    channel.handshake(capacity=0, plugins=[{"name": "nothing"}])
    return control, channel


def run_flood(control: ControlPlane, channel: RawChannel, blob: bytes, seconds: float) -> dict[str, Any]:
    """Flood for ``seconds`` while echo jobs run on the healthy agent; the largest RSS growth seen."""
    before = rss(control)
    flood = Flood(channel, blob, seconds)
    jobs = EchoLoop(control.api())
    probe = HealthProbe(control)
    jobs.start()
    probe.start()
    flood.start()
    peak = before
    while flood.is_alive():
        peak = max(peak, rss(control))
        flood.join(0.1)
    return {
        "growth": peak - before,
        "sent": flood.sent,
        "broken_after": flood.broken_after,
        "jobs": jobs.stop(),
        "latencies": probe.stop(),
    }


def test_heartbeat_flood_without_reading_keeps_memory_bounded(
    control_factory: ControlFactory, agent_factory: AgentFactory
) -> None:
    """An agent writing heartbeats as fast as it can and never reading the answers does not grow
    the control plane's memory, is dropped once it has read nothing for a lease, and the API and
    another agent's jobs keep working."""
    control, channel = flood_setup(control_factory, agent_factory)
    try:
        beats = channel.encoded({"type": "heartbeat"}, 2000)
        result = run_flood(control, channel, beats, seconds=8)
    finally:
        channel.close()
    # Premise: a real flood, before it was cut off: more heartbeats went out than the 50 an
    # interval allows (an agent sends one an interval), in well under the interval.
    assert result["sent"] > 50 * len(beats) // 2000, result["sent"]
    assert result["growth"] < 64 * MiB, result["growth"]
    # Dropped: its writes fail within seconds (it sends thousands of beats an interval), and why is logged.
    assert result["broken_after"] is not None and result["broken_after"] < scaled(8), result["broken_after"]
    assert "dropping agent connection" in control.log_text()
    assert "(flooder): heartbeat_flood: over 50 heartbeats in 1 s" in control.log_text()
    assert 1 == protocol_errors(control, "heartbeat_flood")
    api = control.api()
    after = api.wait_done(api.submit("echo", {"count": 20})["id"])  # and after it, as before
    states = [(j["state"], j["agent"], j["record_count"]) for j in [*result["jobs"], after]]
    assert [("succeeded", "healthy", 20)] * len(states) == states
    assert len(states) >= 2, states
    assert max(result["latencies"]) < scaled(2), result["latencies"]


def test_agent_that_does_not_read_its_answers_is_dropped(
    control_factory: ControlFactory, agent_factory: AgentFactory
) -> None:
    """An agent writing stale records (each answered with an abandon) and never reading is
    dropped once its unread answers pass max_agent_backlog_bytes, counted as backlogged."""
    control, channel = flood_setup(control_factory, agent_factory, max_agent_backlog_bytes=MiB)
    stale = {"type": "records", "job_id": "not-its-job", "attempt": 1, "seq": 1, "records": [{"n": 0}]}
    try:
        result = run_flood(control, channel, channel.encoded(stale, 2000), seconds=scaled(15))
    finally:
        channel.close()
    # Premise: more stale frames than a 1 MiB backlog of answers can hold were written.
    assert result["sent"] > 2 * MiB, result["sent"]
    assert result["broken_after"] is not None and result["broken_after"] < scaled(10), result["broken_after"]
    assert 1 == protocol_errors(control, "backlogged")
    assert re.search(r"agent flooder \(\S+\) does not read its answers", control.log_text())
    assert result["growth"] < 64 * MiB, result["growth"]
    states = [(j["state"], j["agent"], j["record_count"]) for j in result["jobs"]]
    assert [("succeeded", "healthy", 20)] * len(states) == states
    assert len(states) >= 1, states
    assert max(result["latencies"]) < scaled(2), result["latencies"]


# --- 3. sync state only for the sync a job was given ----------------------------------------------


def syncs(api: Api) -> dict[str, dict[str, Any]]:
    status, body = api.request("GET", "/api/v1/syncs")
    assert 200 == status, body
    return {s["name"]: s for s in body}


async def run_scripted(
    inbox: Inbox, api: Api, plugin: str, params: dict[str, Any], complete: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Submit a job, take its offer, accept it and complete it with ``complete``'s fields,
    then give the slot back as an agent does; (the offer, the job as it ended)."""
    job = await blocking(api.submit, plugin, params)
    offer = await inbox.next("offer")
    assert job["id"] == offer["job_id"], offer
    ref = {"job_id": offer["job_id"], "attempt": offer["attempt"]}
    await inbox.ch.send({"type": "accept", **ref}, {"type": "complete", **ref, "record_count": 0, **complete})
    ack = await inbox.next("complete_ack")
    assert ref == {"job_id": ack["job_id"], "attempt": ack["attempt"]}
    await inbox.ch.send({"type": "credit", "n": 1})
    return offer, await blocking(api.wait_done, job["id"], 20)


async def test_sync_state_is_kept_only_for_the_sync_the_job_was_given(control_factory: ControlFactory) -> None:
    """A completion's sync_state replaces a sync's state only for a succeeded job of that very
    sync: an echo job, a job of another sync and a failed job of the sync change nothing."""
    control = control_factory()
    api = control.api()
    identity = enroll(control, "liar")
    ch = await Channel.open(control.url, identity.context())
    try:
        await ch.handshake(identity, capacity=1, plugins=[{"name": "echo"}, {"name": "ldap"}])
        inbox = Inbox(ch)
        async with keepalive(ch):
            # The control: a sync job's own state is kept, so the store does take states.
            victim = {"mode": "sync", "sync": "victim-sync", "base": "dc=example"}
            state = {"name": "victim-sync", "version": 0, "watermark": "w1", "ids": ""}
            offer, honest = await run_scripted(inbox, api, "ldap", victim, {"status": "succeeded", "sync_state": state})
            assert {"name": "victim-sync", "version": 0, "watermark": None, "ids": ""} == offer["sync_state"]
            assert "sync_state" not in offer["params"]
            assert "succeeded" == honest["state"]
            kept = syncs(api)
            assert (["victim-sync"], 1, "w1", honest["id"]) == (
                list(kept),
                kept["victim-sync"]["version"],
                kept["victim-sync"]["watermark"],
                kept["victim-sync"]["job_id"],
            )

            # An echo job that claims the sync's state (at its current version, so the store would take it).
            forged = {"name": "victim-sync", "version": 1, "watermark": "x", "ids": ""}
            _, echo = await run_scripted(
                inbox, api, "echo", {"count": 0}, {"status": "succeeded", "sync_state": forged}
            )
            # A job of sync A that reports state for sync B (new, and the victim).
            sync_a = {"mode": "sync", "sync": "sync-a", "base": "dc=example"}
            other = {"name": "sync-b", "version": 0, "watermark": "x", "ids": ""}
            _, a_for_b = await run_scripted(inbox, api, "ldap", sync_a, {"status": "succeeded", "sync_state": other})
            _, a_for_victim = await run_scripted(
                inbox, api, "ldap", sync_a, {"status": "succeeded", "sync_state": forged}
            )
            # A failed run of the victim sync itself.
            failed = {"status": "failed", "error": {"code": "boom"}, "sync_state": forged}
            _, victim_failed = await run_scripted(inbox, api, "ldap", victim, failed)
    finally:
        await ch.close()
    outcomes = [(j["state"], j["agent"]) for j in (echo, a_for_b, a_for_victim, victim_failed)]
    assert [("succeeded", "liar")] * 3 + [("failed", "liar")] == outcomes
    assert kept == syncs(api)
    assert 4 == control.log_text().count("which it was not given: ignored")


# --- 4. credit is capped ---------------------------------------------------------------------------


async def test_credit_beyond_max_agent_credit_is_ignored(control_factory: ControlFactory) -> None:
    """With max_agent_credit=5 an agent asking for 1000 slots (hello and credit) gets 5 offers
    out of 20 queued jobs, and one more only for each job it finishes."""
    control = control_factory(max_agent_credit=5)
    api = control.api()
    jobs = {api.submit("echo", {"count": 0})["id"] for _ in range(20)}
    identity = enroll(control, "hoarder")
    ch = await Channel.open(control.url, identity.context())
    try:
        await ch.handshake(identity, capacity=1000, plugins=[{"name": "echo"}])
        inbox = Inbox(ch)
        async with keepalive(ch):
            first = await inbox.during(1.5, "offer")
            await ch.send({"type": "credit", "n": 1000})
            second = await inbox.during(1.5, "offer")
            for offer in first[:2]:
                ref = {"job_id": offer["job_id"], "attempt": offer["attempt"]}
                await ch.send({"type": "accept", **ref}, {"type": "complete", **ref, "status": "succeeded"})
            await ch.send({"type": "credit", "n": 1000})
            third = await inbox.during(1.5, "offer")
            status, queued = await blocking(api.request, "GET", "/api/v1/jobs?state=queued&limit=100")
    finally:
        await ch.close()
    offered = [m["job_id"] for m in first + second + third]
    # Premise: the offers are for the jobs submitted, each once.
    assert (True, len(offered)) == (set(offered) <= jobs, len(set(offered)))
    assert (5, 0, 2) == (len(first), len(second), len(third))
    assert (200, 13) == (status, len(queued["jobs"]))
    done = [api.job(m["job_id"])["state"] for m in first[:2]]
    assert ["succeeded", "succeeded"] == done


# --- 5. connections that never authenticate --------------------------------------------------------


async def open_unauthenticated(control: ControlPlane) -> Any:
    return await connect(
        f"wss://127.0.0.1:{control.port}/api/v1/agent/connect",
        ssl=control.context,
        subprotocols=[Subprotocol(SUBPROTOCOL)],
        open_timeout=scaled(10),
        ping_interval=None,
        max_size=None,
    )


async def closed_after(ws: Any, started: float) -> tuple[float, int | None]:
    """Wait (10 s at most) until the server closes ``ws``: (seconds since ``started``, its close code)."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(scaled(10)):
            while True:
                await ws.recv()
    return time.monotonic() - started, ws.close_code


async def test_handshakes_are_bounded_in_number_and_time(
    control_factory: ControlFactory, agent_factory: AgentFactory
) -> None:
    """With max_unauthenticated=4 a fifth connection in its handshake is closed 1013 at once;
    the four that never say hello are closed after handshake_timeout_s=2; then an agent connects."""
    control = control_factory(max_unauthenticated=4, handshake_timeout_s=2)
    started = time.monotonic()
    opened = [await open_unauthenticated(control) for _ in range(4)]
    idle = list(opened)
    try:
        # Premise: all four are past the websocket handshake and were challenged.
        challenges = [json.loads(await asyncio.wait_for(ws.recv(), scaled(5))) for ws in idle]
        assert ["challenge"] * 4 == [c["type"] for c in challenges]
        refused_at = time.monotonic()
        try:
            opened.append(await open_unauthenticated(control))
        except InvalidStatus as exc:  # refused at the HTTP upgrade rather than closed
            refused: Any = f"HTTP {exc.response.status_code}"
        else:
            refused = (await closed_after(opened[-1], refused_at))[1]
        refused_in = time.monotonic() - refused_at
        closes = await asyncio.gather(*(closed_after(ws, started) for ws in idle))
    finally:
        for ws in opened:
            await ws.close()
    assert (1013, 1) == (refused, protocol_errors(control, "too_many_handshakes"))
    assert refused_in < scaled(1), refused_in
    assert 4 == control.log_text().count("(unauthenticated) ended: TimeoutError")
    assert all(1.5 <= t < scaled(2 + 3) for t, _code in closes), closes
    agent_factory(control, "late")
    await blocking(wait_connected, control.api(), ["late"])
    job = await blocking(control.api().submit, "echo", {"count": 3})
    done = await blocking(control.api().wait_done, job["id"], 20)
    assert ("succeeded", "late", 3) == (done["state"], done["agent"], done["record_count"])


# --- 6. frames for attempts the agent does not hold ------------------------------------------------


async def test_frames_for_another_agents_attempt_change_nothing(
    control_factory: ControlFactory, agent_factory: AgentFactory
) -> None:
    """Accept, progress, reject, records and complete frames for another agent's running attempt
    (or a made-up one) change nothing: the job's records, state and agent stay the real agent's."""
    control = control_factory(heartbeat_s=1.0)
    api = control.api()
    agent_factory(control, "worker")
    await blocking(wait_connected, api, ["worker"])
    identity = enroll(control, "intruder")
    ch = await Channel.open(control.url, identity.context())
    try:
        await ch.handshake(identity, capacity=4, plugins=[{"name": "nothing"}])
        async with keepalive(ch):
            job = await blocking(api.submit, "echo", {"count": 50, "interval_s": 0.06})
            running = await blocking(
                wait_until,
                lambda: (j := api.job(job["id"]))["state"] == "running" and j,
                10,
                "the job to run on the worker",
            )
            attempt = running["attempt"]
            silent = [  # answered with nothing; the abandons for the frames after them show they were read
                {"type": "accept", "attempt": attempt, "safe_to_repeat": True},
                {"type": "progress", "attempt": attempt, "done": 1, "total": 1, "message": "forged"},
                {"type": "reject", "attempt": attempt, "error": {"code": "forged", "retryable": False}},
            ]
            frames = [
                {"type": "records", "attempt": attempt, "seq": 1, "records": [{"n": 0, "forged": True}]},
                {"type": "records", "attempt": attempt, "seq": 2, "records": [{"n": 1, "forged": True}] * 100},
                {"type": "records", "attempt": 7, "seq": 1, "records": [{"n": 0, "forged": True}]},
                {"type": "complete", "attempt": attempt, "status": "succeeded", "record_count": 0},
                {"type": "complete", "attempt": attempt, "status": "failed", "error": {"code": "forged"}},
                {"type": "complete", "attempt": 7, "status": "succeeded", "record_count": 1},
            ]
            await ch.send(*({**f, "job_id": job["id"]} for f in silent + frames))
            inbox = Inbox(ch)
            answers = [await inbox.next("abandon") for _ in frames]
            during = await blocking(api.job, job["id"])
    finally:
        await ch.close()
    # Premise: each forged frame reached the dispatcher while the real attempt was running. (In
    # any order: a stale completion's answer waits for a read of the job, and on PostgreSQL
    # concurrent reads, on a pool of connections, may end in any order.)
    assert sorted((job["id"], f["attempt"]) for f in frames) == sorted((a["job_id"], a["attempt"]) for a in answers)
    assert ("running", "worker", attempt) == (during["state"], during["agent"], during["attempt"])
    done = await blocking(api.wait_done, job["id"], 30)
    assert ("succeeded", "worker", attempt, 50) == (done["state"], done["agent"], done["attempt"], done["record_count"])
    assert [{"n": n} for n in range(50)] == await blocking(api.records, job["id"])
