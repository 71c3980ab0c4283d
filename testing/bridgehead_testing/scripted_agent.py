"""A scripted agent: a real enrolment and a real mutual-TLS websocket, with every frame
written by the test. It plays the hostile enrolled agent (floods, lies, stale attempts) and the
parts of a real agent a test wants to watch byte by byte.

Only the standard pieces are used (``cryptography`` for the key and CSR, ``websockets`` for the
socket), so it tests the control plane, not our own agent code.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bridgehead_testing.harness import ControlPlane, scaled

SUBPROTOCOL = "bridgehead.v1"


def csr_for(key: Ed25519PrivateKey, name: str) -> str:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])])
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .sign(key, None)
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


def hello_bytes(nonce: str, agent: str, cluster: str, binding: str) -> bytes:
    """The hello's signed bytes, written out here rather than imported (docs/protocol.md)."""
    return json.dumps(
        ["bridgehead.hello.v1", nonce, agent, cluster, binding], separators=(",", ":"), ensure_ascii=False
    ).encode()


@dataclass
class ScriptedIdentity:
    name: str
    cluster: str
    key: Ed25519PrivateKey
    certificate: bytes
    server_ca: bytes
    signing_keys: list[dict[str, Any]] = field(default_factory=list)

    def context(self, client_cert: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.server_ca.decode())
        if client_cert:
            cert = self.certificate.decode()
            key = self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
            # load_cert_chain reads files only: a throwaway pair, readable by us alone.
            import os
            import tempfile

            fd, path = tempfile.mkstemp(suffix=".pem")
            with os.fdopen(fd, "w") as f:
                f.write(cert + key)
            try:
                context.load_cert_chain(path)
            finally:
                os.unlink(path)
        return context

    def sign_hello(self, nonce: str, binding: str, name: str | None = None, cluster: str | None = None) -> str:
        signed = hello_bytes(nonce, name or self.name, cluster or self.cluster, binding)
        return base64.b64encode(self.key.sign(signed)).decode()


def enroll(control: ControlPlane, name: str, cluster: str = "default", token: str | None = None) -> ScriptedIdentity:
    """Enrol ``name`` through the real API with a fresh key and CSR."""
    token = token or control.enrollment_token(cluster)
    key = Ed25519PrivateKey.generate()
    body = {"token": token.split(".")[0], "agent": name, "cluster": cluster, "csr": csr_for(key, name)}
    status, answer = control.api("").request("POST", "/api/v1/enroll", body)
    assert 201 == status, answer
    return ScriptedIdentity(
        name,
        cluster,
        key,
        answer["certificate"].encode(),
        answer["server_ca"].encode(),
        answer["signing_keys"],
    )


class Channel:
    """One agent-channel websocket, driven frame by frame."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        ssl_object = ws.transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self.binding = hashlib.sha256(der).hexdigest() if der else ""

    @classmethod
    async def open(
        cls, url: str, context: ssl.SSLContext | None, subprotocols: list[str] | None = None, **kwargs: Any
    ) -> Channel:
        ws_url = url.replace("https://", "wss://").replace("http://", "ws://") + "/api/v1/agent/connect"
        offered = [Subprotocol(p) for p in (subprotocols if subprotocols is not None else [SUBPROTOCOL])]
        ws = await connect(
            ws_url,
            ssl=context if ws_url.startswith("wss:") else None,
            subprotocols=offered or None,
            max_size=None,
            open_timeout=scaled(10),
            ping_interval=None,
            **kwargs,
        )
        return cls(ws)

    async def recv(self, timeout: float = 10) -> list[dict[str, Any]]:
        """The messages of the next frame (a frame may pack several)."""
        frame = await asyncio.wait_for(self.ws.recv(), scaled(timeout))
        decoded = json.loads(frame)
        return decoded if isinstance(decoded, list) else [decoded]

    async def send(self, *messages: dict[str, Any]) -> None:
        for message in messages:
            await self.ws.send(json.dumps(message))

    async def handshake(self, identity: ScriptedIdentity, capacity: int = 4, **hello: Any) -> dict[str, Any]:
        """Challenge, a correctly signed hello, and the welcome (returned)."""
        await self.say_hello(identity, capacity, **hello)
        [welcome, *_rest] = await self.recv()
        assert "welcome" == welcome["type"], welcome
        return welcome

    async def say_hello(self, identity: ScriptedIdentity, capacity: int = 4, **hello: Any) -> None:
        """Read the challenge and answer it with a hello signed as ``identity``; ``hello`` adds or
        overrides fields."""
        [challenge] = await self.recv()
        assert "challenge" == challenge["type"], challenge
        await self.send(
            {
                "type": "hello",
                "agent": identity.name,
                "cluster": identity.cluster,
                "signature": identity.sign_hello(challenge["nonce"], self.binding),
                "capacity": capacity,
                "plugins": [{"name": "echo"}],
                **hello,
            }
        )

    async def close(self) -> None:
        await self.ws.close()


class Inbox:
    """The messages a scripted channel receives, one at a time (one frame may pack several)."""

    def __init__(self, ch: Channel) -> None:
        self.ch = ch
        self.pending: collections.deque[dict[str, Any]] = collections.deque()

    async def next(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        """The next message of type ``kind``; heartbeat answers and others before it are skipped."""
        async with asyncio.timeout(scaled(timeout)):
            while True:
                while self.pending:
                    message = self.pending.popleft()
                    if message["type"] == kind:
                        return message
                self.pending.extend(await self.ch.recv(timeout=3600))

    async def during(self, seconds: float, kind: str) -> list[dict[str, Any]]:
        """Every message of type ``kind`` received in the next ``seconds`` (scaled)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(scaled(seconds)):
                while True:
                    self.pending.extend(await self.ch.recv(timeout=3600))
        out = [m for m in self.pending if m["type"] == kind]
        self.pending.clear()
        return out


@contextlib.asynccontextmanager
async def keepalive(ch: Channel, interval: float = 0.3) -> AsyncIterator[None]:
    """Send heartbeats on ``ch`` in the background, as a live agent does (the interval is the
    behaviour here: a heartbeat is due every so often, so this one waits on time)."""

    async def beat() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ch.send({"type": "heartbeat"})
                await asyncio.sleep(interval)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
