"""Hostile peers of the agent channel, on loopback, each in a thread with its own event loop:

    Impostor   a control plane that is not one: it sends a challenge, takes any hello, answers
               with a welcome, then sends the frames the test hands it (acking what the agent
               reports and answering its heartbeats, as a real one would)
    Relay      terminates the agent's TLS and opens its own wss connection to the real
               control plane, forwarding every frame both ways and the close back
    Target     an HTTP server that counts the requests it gets, per path

Standard pieces only (``websockets``, ``ssl``, ``http.server``), written from the protocol
document rather than imported, so they test the agent and the control plane, not our codec.
Both websocket servers count the TLS ClientHellos they get (``client_hellos``), so a test can
show that a handshake was attempted even when it never completed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http.server
import json
import secrets
import ssl
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bridgehead_testing.harness import scaled

SUBPROTOCOL = "bridgehead.v1"
WELCOME = {
    "type": "welcome",
    "session_id": "x",
    "heartbeat_s": 5,
    "lease_s": 10,
    "max_message_bytes": 4194304,
    "resume": [],
}
T = TypeVar("T")


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A plain TLS server context (no client certificate asked for) with that certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


def messages_of(frame: bytes | str) -> list[dict[str, Any]]:
    """The messages of one frame (a frame holds one JSON object or an array of them)."""
    decoded = json.loads(frame)
    return decoded if isinstance(decoded, list) else [decoded]


class _WebsocketServer:
    """A websockets server on a free loopback port, served by its own thread and event loop."""

    def __init__(self, context: ssl.SSLContext, name: str) -> None:
        self.client_hellos = 0  # TLS handshakes begun (the SNI callback runs on every ClientHello)
        self._lock = threading.Lock()
        context.sni_callback = self._on_client_hello
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

        async def start() -> Server:
            return await serve(
                self._handle,
                "127.0.0.1",
                0,
                ssl=context,
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                max_size=None,
                ping_interval=None,
                compression=None,
            )

        self.server = self.run(start())
        self.port = int(self.server.sockets[0].getsockname()[1])
        self.url = f"https://127.0.0.1:{self.port}"

    def _on_client_hello(self, _ssl: Any, _server_name: str | None, _context: ssl.SSLContext) -> None:
        with self._lock:
            self.client_hellos += 1

    async def _handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """Run ``coroutine`` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(scaled(timeout))

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(scaled(10))
        self.loop.close()


@dataclass
class ImpostorSession:
    """One connection the impostor accepted (so its TLS handshake completed)."""

    index: int
    ws: ServerConnection
    received: list[dict[str, Any]] = field(default_factory=list)  # what the agent sent, in order
    closed: bool = False

    @property
    def hello(self) -> dict[str, Any] | None:
        return next((m for m in self.received if m["type"] == "hello"), None)


class Impostor(_WebsocketServer):
    """Poses as the control plane with whatever certificate ``context`` holds."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.sessions: list[ImpostorSession] = []
        super().__init__(context, "impostor control plane")

    async def _handle(self, ws: ServerConnection) -> None:
        with self._lock:
            session = ImpostorSession(len(self.sessions), ws)
            self.sessions.append(session)
        try:
            await ws.send(json.dumps({"type": "challenge", "nonce": secrets.token_urlsafe(32)}))
            async for frame in ws:
                for message in messages_of(frame):
                    # Answered before it is recorded: once a test sees a message, the answer
                    # precedes on the wire whatever the test sends next.
                    for answer in self._answers(message):
                        await ws.send(json.dumps(answer))
                    with self._lock:
                        session.received.append(message)
        except ConnectionClosed:
            pass
        finally:
            session.closed = True

    @staticmethod
    def _answers(message: dict[str, Any]) -> list[dict[str, Any]]:
        kind = message["type"]
        if kind == "hello":
            return [WELCOME]
        if kind == "records":
            last = message["seq"] + len(message["records"]) - 1
            return [{"type": "ack", "job_id": message["job_id"], "attempt": message["attempt"], "seq": last}]
        if kind == "complete":
            return [{"type": "complete_ack", "job_id": message["job_id"], "attempt": message["attempt"]}]
        if kind == "heartbeat":
            return [{"type": "heartbeat"}]
        return []

    def welcomed(self) -> list[ImpostorSession]:
        """The open sessions whose agent said hello (and so was sent the welcome)."""
        with self._lock:
            return [s for s in self.sessions if s.hello is not None and not s.closed]

    def send(self, frame: bytes, session: ImpostorSession) -> None:
        self.run(session.ws.send(frame))

    def received(self, kind: str | None = None, job_id: str | None = None) -> list[dict[str, Any]]:
        """Every message of every session (of ``kind``, for ``job_id``), in order."""
        with self._lock:
            everything = [m for s in self.sessions for m in s.received]
        return [
            m
            for m in everything
            if (kind is None or m["type"] == kind) and (job_id is None or m.get("job_id") == job_id)
        ]

    def answers(self, job_id: str) -> list[dict[str, Any]]:
        """The agent's ``accept`` and ``reject`` frames for ``job_id``, in order."""
        return [m for m in self.received(job_id=job_id) if m["type"] in ("accept", "reject")]


@dataclass
class RelaySession:
    """One agent connection the relay accepted, and the upstream connection it opened."""

    index: int
    frames: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # ("up" | "down", message)
    upstream_close: tuple[int | None, str] | None = None  # (code, reason) once upstream closed

    def sent(self, direction: str, kind: str) -> list[dict[str, Any]]:
        return [m for d, m in self.frames if d == direction and m["type"] == kind]


class Relay(_WebsocketServer):
    """Terminates the agent's TLS with ``context``; opens ``upstream`` (a wss URL) with
    ``upstream_context``, which holds no client certificate; forwards frames both ways."""

    def __init__(self, context: ssl.SSLContext, upstream: str, upstream_context: ssl.SSLContext) -> None:
        self.upstream = upstream
        self.upstream_context = upstream_context
        self.sessions: list[RelaySession] = []
        super().__init__(context, "relay")

    async def _handle(self, ws: ServerConnection) -> None:
        with self._lock:
            session = RelaySession(len(self.sessions))
            self.sessions.append(session)
        async with connect(
            self.upstream,
            ssl=self.upstream_context,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            max_size=None,
            open_timeout=scaled(10),
            ping_interval=None,
            compression=None,
        ) as upstream:

            async def pump(source: Any, sink: Any, direction: str) -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for frame in source:
                        with self._lock:
                            session.frames += [(direction, m) for m in messages_of(frame)]
                        await sink.send(frame)

            pumps = [
                asyncio.create_task(pump(upstream, ws, "down")),
                asyncio.create_task(pump(ws, upstream, "up")),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        with self._lock:
            session.upstream_close = (upstream.close_code, upstream.close_reason or "")
        if upstream.close_code is not None and 3000 <= upstream.close_code < 5000:
            await ws.close(upstream.close_code, upstream.close_reason or "")

    def closed_sessions(self) -> list[RelaySession]:
        with self._lock:
            return [s for s in self.sessions if s.upstream_close is not None]

    def sent(self, direction: str, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            sessions = list(self.sessions)
        return [m for s in sessions for m in s.sent(direction, kind)]


class Target:
    """A local HTTP server that answers 200 to every GET and counts them per path."""

    def __init__(self) -> None:
        self._hits: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()
        hits = self._hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with lock:
                    hits[self.path] += 1
                body = json.dumps({"path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
                pass

        self._lock = lock
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="target", daemon=True)
        self._thread.start()

    def hits(self, prefix: str) -> dict[str, int]:
        """Requests so far per path, for the paths that start with ``prefix``."""
        with self._lock:
            return {path: n for path, n in self._hits.items() if path.startswith(prefix)}

    def profile(self, name: str = "target") -> str:
        """The agent's connection profile for this server (TOML)."""
        return f'[connections.{name}]\nplugin = "rest"\nbase_url = "{self.url}"\n'

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(scaled(10))
