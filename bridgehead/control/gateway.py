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
from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.websockets import WebSocket, WebSocketDisconnect

from bridgehead import __version__
from bridgehead.control.dispatch import AgentLink, Flooding
from bridgehead.control.pki import AgentCert, PkiError, agent_identity
from bridgehead.core.crash_points import armed, crash_point
from bridgehead.protocol import (
    FEATURE_CONFIRM,
    SUBPROTOCOL,
    Ack,
    Certificate,
    Challenge,
    Error,
    FetchRelease,
    Hello,
    ProtocolError,
    Renew,
    ServerMessage,
    ServerSession,
    UpdateStatus,
    Welcome,
    encode,
    pack,
)
from bridgehead.protocol.errors import CLOSE_AUTH_FAILED, CLOSE_POLICY_VIOLATION, CLOSE_UNSUPPORTED_VERSION
from bridgehead.protocol.signing import hello_bytes

if TYPE_CHECKING:
    from bridgehead.control.plane import ControlPlane

log = logging.getLogger("bridgehead.control.gateway")
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_GRACE_S = 1.0  # after a close for a protocol error, how long the agent has to answer it
TRANSPORT_EXTENSION = "bridgehead.transport"  # set by bridgehead.control.tls.PeerCertWebSocketProtocol
# How an encoded ``ack`` begins (the message type is its first key): for the crash point.
ACK_PREFIX = encode(Ack(job_id="", attempt=0, seq=0)).split(b",", 1)[0]
AFTER_ACK_SENT = "control.after_ack_sent"


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


class Backlogged(ProtocolError):
    close_code = CLOSE_POLICY_VIOLATION


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
    server = control.config.server
    if control.unauthenticated >= server.max_unauthenticated:
        # Refused before any work: a flood of half-open sessions costs this, nothing more.
        control.metrics.protocol_errors.labels("too_many_handshakes").inc()
        # Accepted first: a close before accept is an HTTP 403 to the client, not this code.
        await ws.accept(subprotocol=SUBPROTOCOL)
        await ws.close(CLOSE_TRY_AGAIN_LATER, "too many agent handshakes in progress; try again")
        return
    await ws.accept(subprotocol=SUBPROTOCOL)
    authenticated = False
    peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
    session = ServerSession(server.max_message_bytes)
    outbox: deque[bytes | tuple[int, str]] = deque()  # encoded messages, or a close (code, reason)
    backlog = 0  # bytes queued in the outbox, not yet taken by the writer
    dropped = False
    stalled_since: float | None = None  # when the frame being written started to wait
    wake = asyncio.Event()
    link: AgentLink | None = None

    def queue(encoded: bytes) -> None:
        nonlocal backlog
        if dropped:
            return
        backlog += len(encoded)
        if backlog > server.max_agent_backlog_bytes:
            drop(f"does not read its answers ({backlog} bytes unread)")
            return
        outbox.append(encoded)
        wake.set()

    def drop(why: str) -> None:
        """The agent does not read what it is sent: cut it off at once, without flushing
        (a polite close would wait on the very socket buffer it leaves full)."""
        nonlocal dropped
        dropped = True
        outbox.clear()
        control.metrics.protocol_errors.labels("backlogged").inc()
        log.warning("agent %s (%s) %s: dropping the connection", link.name if link else "unauthenticated", peer, why)
        session.fail()
        _abort(ws)
        writer_task.cancel()

    def send(message: ServerMessage) -> None:
        queue(session.send(message))

    def encode(message: ServerMessage) -> bytes:
        encoded = session.send(message)
        limit = server.max_message_bytes
        if len(encoded) > limit:
            raise ValueError(f"{len(encoded)} bytes, over the {limit}-byte frame limit")
        return encoded

    def close(code: int, reason: str) -> None:
        outbox.append((code, reason[:123]))
        wake.set()

    async def writer() -> None:
        nonlocal backlog, stalled_since
        limit = server.max_message_bytes
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
                backlog -= len(item)
                parts.append(item)
            if link is not None:
                link.heartbeat_pending = False
            # Everything queued since the last pass goes out in as few frames as fit.
            for frame in pack(parts, limit):
                stalled_since = time.monotonic()
                await ws.send_bytes(frame)
                stalled_since = None
            if armed(AFTER_ACK_SENT) and any(part.startswith(ACK_PREFIX) for part in parts):
                crash_point(AFTER_ACK_SENT)  # tests: records acknowledged survive a kill -9
            if close_with is not None:
                session.fail()
                await ws.close(*close_with)
                return

    writer_task = asyncio.create_task(writer(), name=f"gateway writer {peer}")
    control.unauthenticated += 1  # counted down in ``finally`` (or once authenticated), nothing between
    try:
        send(Challenge(nonce=secrets.token_urlsafe(32), server_version=__version__))
        [hello] = session.receive(await asyncio.wait_for(_receive(ws), server.handshake_timeout_s))
        if not isinstance(hello, Hello) or session.challenge is None:  # the session allows nothing else
            raise ProtocolError("unexpected_message", "expected hello")
        await _authenticate(control, ws, hello, session.challenge.nonce)
        authenticated = True
        control.unauthenticated -= 1
        link = AgentLink(
            name=hello.agent,
            cluster=hello.cluster,
            session_id=secrets.token_hex(8),
            plugins={p.name for p in hello.plugins},
            credit=min(hello.capacity, server.max_agent_credit),
            send=send,
            close=close,
            encode=encode,
            send_encoded=queue,
            version=hello.version,
            confirms=FEATURE_CONFIRM in hello.features,
        )
        control.schemas.publish(hello.agent, hello.plugins)
        # Awaited: once durable, so is every attempt committed before it, and the welcome's
        # "continue" doubles as the ``Confirm`` of an attempt offered at its commit.
        await control.store.agent_seen(
            hello.agent,
            time.time(),
            hello.version,
            [{"name": p.name, "version": p.version} for p in hello.plugins],
            list(hello.connections),
        )
        await control.dispatcher.prepare_attach(link.name)  # several nodes: its attempts are held here now
        verdicts = control.dispatcher.attach(link, hello)
        send(
            Welcome(
                session_id=link.session_id,
                heartbeat_s=server.heartbeat_s,
                lease_s=control.dispatcher.lease_s,
                max_message_bytes=server.max_message_bytes,
                resume=verdicts,
                signing_keys=control.signing_keys.published,
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
        control.courier.attached(link)
        stall_limit = control.dispatcher.lease_s
        while not writer_task.done():
            frame = await _receive(ws)
            if stalled_since is not None and time.monotonic() - stalled_since > stall_limit:
                # It talks but does not read (its own frames keep its lease alive): what it
                # is sent waits in a full socket buffer. Cut it off, as a silent agent is.
                drop(f"has read nothing for {stall_limit:g} s while it kept sending")
                break
            for message in session.receive(frame):
                if isinstance(message, Renew):
                    await _renew(control, link, message, send)
                elif isinstance(message, FetchRelease | UpdateStatus):
                    control.courier.handle(link, message)
                else:
                    control.dispatcher.handle(link, message)
    except Flooding as exc:
        # Hostile, not buggy: no courtesy close (uvicorn would read and discard the flood
        # meanwhile, at full speed, on the loop every other agent shares).
        control.metrics.protocol_errors.labels(exc.code).inc()
        log.warning("dropping agent connection %s (%s): %s", peer, link.name if link else "unauthenticated", exc)
        session.fail()
        _abort(ws)
    except ProtocolError as exc:
        control.metrics.protocol_errors.labels(exc.code).inc()
        log.warning("closing agent connection %s (%s): %s", peer, link.name if link else "unauthenticated", exc)
        if session.state.name != "CLOSED":
            with contextlib.suppress(Exception):
                outbox.append(session.send(Error(code=exc.code, message=exc.message[:8000])))
            close(exc.close_code, exc.close_reason)
            try:
                await asyncio.wait_for(writer_task, 5)
            except TimeoutError:  # it does not read, so the close cannot be written: cut it off
                _abort(ws)
            except Exception:  # noqa: BLE001, S110 - the connection is going away either way
                pass
            else:
                # The close is written; a peer that goes on sending instead of answering it is
                # cut off soon rather than after uvicorn's 10 s close timeout.
                asyncio.get_running_loop().call_later(CLOSE_GRACE_S, _abort, ws)
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
        if not authenticated:
            control.unauthenticated -= 1
        if link is not None:
            control.dispatcher.detach(link)
        writer_task.cancel()
        with contextlib.suppress(BaseException):
            await writer_task


def _abort(ws: WebSocket) -> None:
    """Drop the connection without flushing what is queued for it."""
    transport = (ws.scope.get("extensions") or {}).get(TRANSPORT_EXTENSION)
    if transport is not None:
        transport.abort()


async def _authenticate(control: ControlPlane, ws: WebSocket, hello: Hello, nonce: str) -> None:
    """Who the agent is: over TLS its certificate says (verified against our CA by the TLS
    layer), and the hello must agree; in every mode the hello is signed by the enrolled key
    over the nonce, the names and the server certificate the agent saw."""
    binding = ""
    cert: AgentCert | None = None
    if control.tls is not None:
        der = (ws.scope.get("extensions") or {}).get("tls", {}).get("client_cert_der")
        if not der:
            raise AuthFailed(
                "auth_failed",
                "no client certificate: an agent connects with the certificate enrolment gave it "
                "(an agent enrolled before TLS must enrol again)",
            )
        try:
            cert = agent_identity(der)
        except (PkiError, ValueError) as exc:
            raise AuthFailed("auth_failed", str(exc)) from None
        if (cert.agent, cert.cluster) != (hello.agent, hello.cluster):
            raise AuthFailed(
                "auth_failed",
                f"the hello says {hello.agent!r}/{hello.cluster!r} but the certificate names "
                f"{cert.agent!r}/{cert.cluster!r}",
            )
        binding = control.tls.server_cert_sha256
    agent = await control.store.get_agent(hello.agent)
    if agent is None:
        raise AuthFailed("auth_failed", f"agent {hello.agent!r} is not enrolled")
    if agent.revoked_at is not None:
        raise AuthFailed("auth_failed", f"agent {hello.agent!r} was revoked; an admin must enrol it again")
    if agent.cluster != hello.cluster:
        raise AuthFailed("auth_failed", f"agent {hello.agent!r} is enrolled in cluster {agent.cluster!r}")
    if cert is not None and cert.public_key != agent.public_key:
        raise AuthFailed("auth_failed", f"agent {hello.agent!r}: this certificate is for a key that was replaced")
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(agent.public_key))
        key.verify(
            base64.b64decode(hello.signature, validate=True), hello_bytes(nonce, hello.agent, hello.cluster, binding)
        )
    except (InvalidSignature, ValueError, binascii.Error):
        raise AuthFailed(
            "auth_failed",
            f"agent {hello.agent!r}: the hello's signature does not match its enrolled key and this connection",
        ) from None


async def _renew(control: ControlPlane, link: AgentLink, message: Renew, send: Callable[[ServerMessage], None]) -> None:
    """A new certificate for the session's agent and its enrolled key (names from the session)."""
    agent = await control.store.get_agent(link.name)
    try:
        certificate, issued = control.authority.issue_agent(
            message.csr.encode(), link.name, link.cluster, control.config.server.agent_cert_ttl_s
        )
    except PkiError as exc:
        raise ProtocolError("bad_csr", str(exc)) from None
    if agent is None or issued.public_key != agent.public_key:
        raise AuthFailed("auth_failed", "a renewal must be for the agent's enrolled key")
    await control.store.set_agent_certificate(link.name, issued.not_after)
    log.info(
        "agent %s: certificate renewed until %s", link.name, time.strftime("%Y-%m-%d", time.gmtime(issued.not_after))
    )
    send(Certificate(certificate=certificate.decode()))
