"""The agent gateway: one websocket per agent, authenticated, pumped through the protocol.

Each connection gets a ``ServerSession`` (sans-I/O) and a writer task draining an outbox,
so the dispatcher can queue frames from anywhere without awaiting the socket. A protocol
error closes this one connection with its close code and reason; it never reaches the
rest of the control plane.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.websockets import WebSocket, WebSocketDisconnect

import controlplane
from agent.protocol import (
    SUBPROTOCOL,
    Challenge,
    Error,
    Hello,
    ProtocolError,
    ServerMessage,
    ServerSession,
    Welcome,
    pack,
)
from agent.protocol.errors import CLOSE_AUTH_FAILED, CLOSE_UNSUPPORTED_VERSION
from controlplane.dispatcher import AgentLink

if TYPE_CHECKING:
    from controlplane.app import ControlPlane

log = logging.getLogger("bridgehead.control.gateway")
HANDSHAKE_TIMEOUT_S = 15.0


class AuthFailed(ProtocolError):
    close_code = CLOSE_AUTH_FAILED


async def _receive(ws: WebSocket) -> bytes | str:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    data: bytes | str | None = message.get("bytes")
    if data is None:
        data = message.get("text") or ""
    return data


async def agent_endpoint(ws: WebSocket) -> None:
    control: ControlPlane = ws.app.state.control
    offered = ws.scope.get("subprotocols") or []
    if SUBPROTOCOL not in offered:
        await ws.accept()
        await ws.close(
            CLOSE_UNSUPPORTED_VERSION,
            f"unsupported protocol {','.join(offered) or 'none'}; this control plane speaks {SUBPROTOCOL}"[:123],
        )
        return
    await ws.accept(subprotocol=SUBPROTOCOL)
    peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
    session = ServerSession(control.config.server.max_message_bytes)
    outbox: deque[bytes | tuple[int, str]] = deque()  # encoded messages, or a close (code, reason)
    wake = asyncio.Event()
    link: AgentLink | None = None

    def send(message: ServerMessage) -> None:
        outbox.append(session.send(message))
        wake.set()

    def encode(message: ServerMessage) -> bytes:
        encoded = session.send(message)
        limit = control.config.server.max_message_bytes
        if len(encoded) > limit:
            raise ValueError(f"{len(encoded)} bytes, over the {limit}-byte frame limit")
        return encoded

    def send_encoded(encoded: bytes) -> None:
        outbox.append(encoded)
        wake.set()

    def close(code: int, reason: str) -> None:
        outbox.append((code, reason[:123]))
        wake.set()

    async def writer() -> None:
        limit = control.config.server.max_message_bytes
        while True:
            await wake.wait()
            wake.clear()
            parts: list[bytes] = []
            close_with: tuple[int, str] | None = None
            while outbox:
                item = outbox.popleft()
                if isinstance(item, tuple):
                    close_with = item
                    break
                parts.append(item)
            # Everything queued since the last pass goes out in as few frames as fit.
            for frame in pack(parts, limit):
                await ws.send_bytes(frame)
            if close_with is not None:
                session.fail()
                await ws.close(*close_with)
                return

    writer_task = asyncio.create_task(writer(), name=f"gateway writer {peer}")
    try:
        send(Challenge(nonce=secrets.token_urlsafe(32), server_version=controlplane.__version__))
        [hello] = session.receive(await asyncio.wait_for(_receive(ws), HANDSHAKE_TIMEOUT_S))
        if not isinstance(hello, Hello) or session.challenge is None:  # the session allows nothing else
            raise ProtocolError("unexpected_message", "expected hello")
        await _authenticate(control, hello, session.challenge.nonce)
        link = AgentLink(
            name=hello.agent,
            cluster=hello.cluster,
            session_id=secrets.token_hex(8),
            plugins={p.name for p in hello.plugins},
            credit=hello.capacity,
            send=send,
            close=close,
            encode=encode,
            send_encoded=send_encoded,
            version=hello.version,
        )
        control.agent_schemas[hello.agent] = {p.name: p.params_schema for p in hello.plugins}
        await control.store.agent_seen(
            hello.agent,
            time.time(),
            hello.version,
            [{"name": p.name, "version": p.version} for p in hello.plugins],
            list(hello.connections),
        )
        verdicts = control.dispatcher.attach(link, hello)
        send(
            Welcome(
                session_id=link.session_id,
                heartbeat_s=control.config.server.heartbeat_s,
                lease_s=control.dispatcher.lease_s,
                max_message_bytes=control.config.server.max_message_bytes,
                resume=verdicts,
            )
        )
        log.info(
            "agent %s connected from %s (cluster %s, capacity %d, %d held job(s))",
            hello.agent,
            peer,
            hello.cluster,
            hello.capacity,
            len(hello.jobs),
        )
        control.dispatcher.activate(link)
        while not writer_task.done():
            frame = await _receive(ws)
            for message in session.receive(frame):
                control.dispatcher.handle(link, message)
    except ProtocolError as exc:
        control.metrics.protocol_errors.labels(exc.code).inc()
        log.warning("closing agent connection %s (%s): %s", peer, link.name if link else "unauthenticated", exc)
        if session.state.name != "CLOSED":
            with contextlib.suppress(Exception):
                outbox.append(session.send(Error(code=exc.code, message=exc.message[:8000])))
            close(exc.close_code, exc.close_reason)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer_task, 5)
    except (WebSocketDisconnect, TimeoutError) as exc:
        log.info(
            "agent connection %s (%s) ended: %s", peer, link.name if link else "unauthenticated", type(exc).__name__
        )
    except Exception:  # noqa: BLE001 - a bug must cost one connection, not the control plane
        log.exception("agent connection %s (%s) failed", peer, link.name if link else "unauthenticated")
        close(1011, "internal error")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer_task, 5)
    finally:
        if link is not None:
            control.dispatcher.detach(link)
        writer_task.cancel()
        with contextlib.suppress(BaseException):
            await writer_task


async def _authenticate(control: ControlPlane, hello: Hello, nonce: str) -> None:
    agent = await control.store.get_agent(hello.agent)
    if agent is None:
        raise AuthFailed("auth_failed", f"agent {hello.agent!r} is not enrolled")
    if agent.cluster != hello.cluster:
        raise AuthFailed("auth_failed", f"agent {hello.agent!r} is enrolled in cluster {agent.cluster!r}")
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(agent.public_key))
        key.verify(base64.b64decode(hello.signature, validate=True), nonce.encode())
    except (InvalidSignature, ValueError, binascii.Error):
        raise AuthFailed(
            "auth_failed", f"agent {hello.agent!r}: the signature does not match its enrolled key"
        ) from None
