"""A light agent for load tests: the real protocol over mutual TLS, no runner, no journal.

Each ``LoadAgent`` is one enrolled identity (its own Ed25519 key and client certificate)
holding one websocket session, pumped through the real sans-I/O ``AgentSession``: it answers
the challenge with a hello signed by ``Identity.sign_hello``, heartbeats at the welcome's
``heartbeat_s`` and answers offers as the echo plugin would (accept, records, complete, then
credit), all from one asyncio loop shared by thousands of them.

Offers' signatures are not verified here: the load client trusts what the control plane sends,
so what it measures is the control plane's cost, not the agent's.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import random
import ssl
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import ClientConnection, connect

from bridgehead import __version__
from bridgehead.agent.identity import Identity, make_csr, new_key
from bridgehead.protocol import (
    SUBPROTOCOL,
    Accept,
    AgentSession,
    Challenge,
    Complete,
    CompleteAck,
    Credit,
    Heartbeat,
    Hello,
    Offer,
    PluginInfo,
    Welcome,
    pack,
)
from bridgehead.protocol.codec import encode_records

ECHO = [PluginInfo(name="echo", version="load")]


@dataclass
class Stats:
    """What every session of the generator reports, pooled (one loop: no locks needed)."""

    beat_latency_s: list[float] = field(default_factory=list)  # answers to heartbeats
    beats_unanswered: int = 0  # a heartbeat whose answer had not come when the next was due
    handshake_s: list[float] = field(default_factory=list)  # TCP+TLS+challenge+hello+welcome
    welcome_s: list[float] = field(default_factory=list)  # hello sent to welcome read
    connect_failures: dict[str, int] = field(default_factory=dict)
    session_ends: dict[str, int] = field(default_factory=dict)  # by close code or reason
    offers: int = 0
    completed: int = 0  # complete_acks received

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


def enroll_all(base: str, anchor: bytes, secret: str, names: list[str], cluster: str, out: Path) -> list[Identity]:
    """Enrol ``names`` over one keep-alive HTTPS connection (call from a worker thread): a
    fresh key and CSR each, as ``bridgehead.agent.enroll`` makes them."""
    context = ssl.create_default_context(cadata=anchor.decode())
    host, port = base.split("://", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=120)
    identities = []
    try:
        for name in names:
            key = new_key()
            body = json.dumps({"token": secret, "agent": name, "cluster": cluster, "csr": make_csr(key, name).decode()})
            conn.request("POST", "/api/v1/enroll", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = response.read()
            if response.status != 201:
                raise RuntimeError(f"enrolment of {name} refused ({response.status}): {answer[:300]!r}")
            doc = json.loads(answer)
            data_dir = out / name
            data_dir.mkdir(parents=True)
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            (data_dir / "agent.key").write_bytes(pem)
            (data_dir / "agent.crt").write_bytes(doc["certificate"].encode())
            identities.append(
                Identity(
                    agent=name,
                    cluster=cluster,
                    agent_id=doc["agent_id"],
                    key=key,
                    data_dir=data_dir,
                    certificate=doc["certificate"].encode(),
                    server_ca=anchor,
                )
            )
    finally:
        conn.close()
    return identities


def _backoff() -> Iterator[float]:
    # The real agent's shape (bridgehead.agent.backoff): jittered, doubling, capped.
    delay = 0.5
    while True:
        yield random.uniform(0, delay)  # noqa: S311 - jitter, not a secret
        delay = min(delay * 2, 30.0)


class LoadAgent:
    """One identity, one session at a time, reconnecting like the real agent when it ends."""

    def __init__(self, identity: Identity, url: str, stats: Stats, connect_timeout_s: float = 30.0) -> None:
        self.identity = identity
        self.url = url
        self.stats = stats
        self.connect_timeout_s = connect_timeout_s
        self.connected = False
        self.sessions = 0
        self._context: ssl.SSLContext | None = None
        self._early: list[Any] = []  # messages that shared the welcome's frame

    def tls(self) -> ssl.SSLContext:
        # One context per identity: Python cannot choose the client certificate per connection.
        if self._context is None:
            context = ssl.create_default_context(cadata=self.identity.server_ca.decode())
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self.identity.cert_file, self.identity.key_file)
            self._context = context
        return self._context

    async def run(self, first_connect: asyncio.Semaphore) -> None:
        """Connect (the first time under ``first_connect``, which paces the ramp), serve, and
        reconnect with backoff whenever the session ends."""
        delays = _backoff()
        gate: asyncio.Semaphore | None = first_connect
        while True:
            try:
                if gate is not None:
                    async with gate:
                        opened = await self._open()
                else:
                    opened = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted and retried, as the agent does
                self.stats.count(self.stats.connect_failures, _describe(exc))
                await asyncio.sleep(next(delays))
                continue
            gate = None  # reconnects are not paced: real agents come back on their own backoff
            try:
                await self._serve(opened)
            except asyncio.CancelledError:
                await opened[0].close()
                raise
            except websockets.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else "no close frame"
                self.stats.count(self.stats.session_ends, f"closed {code}")
            except Exception as exc:  # noqa: BLE001 - counted; the session is reopened
                self.stats.count(self.stats.session_ends, _describe(exc))
            finally:
                self.connected = False
            await asyncio.sleep(next(delays))

    async def _open(self) -> tuple[ClientConnection, AgentSession, Welcome]:
        started = time.perf_counter()
        ws = await connect(
            self.url,
            ssl=self.tls(),
            subprotocols=[websockets.Subprotocol(SUBPROTOCOL)],
            open_timeout=self.connect_timeout_s,
            close_timeout=2,
            ping_interval=None,  # liveness is the protocol's heartbeat, as in the agent
            compression=None,
            user_agent_header=f"bridgehead-load/{__version__}",
        )
        try:
            session = AgentSession()
            [challenge] = session.receive(await asyncio.wait_for(ws.recv(), self.connect_timeout_s))
            assert isinstance(challenge, Challenge)
            ssl_object = ws.transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            binding = hashlib.sha256(der).hexdigest() if der else ""
            hello = Hello(
                agent=self.identity.agent,
                cluster=self.identity.cluster,
                signature=self.identity.sign_hello(challenge.nonce, binding),
                version=__version__,
                capacity=1,
                plugins=ECHO,
            )
            await ws.send(session.send(hello))
            hello_at = time.perf_counter()
            first = session.receive(await asyncio.wait_for(ws.recv(), self.connect_timeout_s))
            self.stats.welcome_s.append(time.perf_counter() - hello_at)
            welcome = first[0]
            if not isinstance(welcome, Welcome):
                raise RuntimeError(f"expected welcome, got {type(welcome).__name__}")
        except BaseException:
            await ws.close()
            raise
        self.stats.handshake_s.append(time.perf_counter() - started)
        self._early = first[1:]
        return ws, session, welcome

    async def _serve(self, opened: tuple[ClientConnection, AgentSession, Welcome]) -> None:
        ws, session, welcome = opened
        self.connected = True
        self.sessions += 1
        beats: deque[float] = deque()
        interval = welcome.heartbeat_s

        async def heartbeat() -> None:
            # First beat at a random phase within the interval: a reconnect storm's sessions
            # spread out as real agents' do (each starts its own timer when its session opens).
            await asyncio.sleep(random.uniform(0, interval))  # noqa: S311 - jitter, not a secret
            while True:
                if beats:
                    self.stats.beats_unanswered += len(beats)
                    beats.clear()
                beats.append(time.perf_counter())
                await ws.send(session.send(Heartbeat()))
                await asyncio.sleep(interval)

        beater = asyncio.create_task(heartbeat())
        try:
            for message in self._early:
                await self._handle(ws, session, message, beats)
            while True:
                # The agent's rule: 2 x heartbeat_s without a frame is a dead connection.
                try:
                    frame = await asyncio.wait_for(ws.recv(), 2 * interval)
                except TimeoutError:
                    raise TimeoutError("client: no frame for 2 x heartbeat_s") from None
                for message in session.receive(frame):
                    await self._handle(ws, session, message, beats)
        finally:
            beater.cancel()

    async def _handle(self, ws: ClientConnection, session: AgentSession, message: Any, beats: deque[float]) -> None:
        if isinstance(message, Heartbeat):
            if beats:
                self.stats.beat_latency_s.append(time.perf_counter() - beats.popleft())
        elif isinstance(message, Offer):
            # What the echo plugin does for {"count": n}, answered in one frame like a busy agent.
            self.stats.offers += 1
            count = int(message.params.get("count", 0)) if isinstance(message.params, dict) else 0
            parts = [session.send(Accept(job_id=message.job_id, attempt=message.attempt, safe_to_repeat=True))]
            if count:
                rows = b"[" + b",".join(b'{"n":%d}' % n for n in range(count)) + b"]"
                parts.append(encode_records(message.job_id, message.attempt, 1, [rows]))
            parts.append(
                session.send(
                    Complete(job_id=message.job_id, attempt=message.attempt, status="succeeded", record_count=count)
                )
            )
            parts.append(session.send(Credit(n=1)))
            for frame in pack(parts, session.max_message_bytes):
                await ws.send(frame)
        elif isinstance(message, CompleteAck):
            self.stats.completed += 1


def _describe(exc: BaseException) -> str:
    text = str(exc).split("\n")[0][:80]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
