"""Where the agent connects, and how a failed or refused connection is told in its log."""

from __future__ import annotations

from typing import Any, TypeVar

import websockets

from bridgehead.protocol import Error, ProtocolError
from bridgehead.protocol.errors import CLOSE_AUTH_FAILED, CLOSE_UNSUPPORTED_VERSION

AGENT_PATH = "/api/v1/agent/connect"


class SessionEnded(Exception):
    """The control plane closed the session on purpose (with a reason we log)."""


def websocket_url(url: str) -> str:
    scheme, rest = url.split("://", 1)
    host = rest.split("/", 1)[0]
    return {"http": "ws", "https": "wss"}.get(scheme, scheme) + "://" + host + AGENT_PATH


M = TypeVar("M")


def expect(messages: list[Any], kind: type[M]) -> M:
    """The one handshake message expected here; an ``error`` ends the session with its reason."""
    if len(messages) == 1 and isinstance(messages[0], kind):
        return messages[0]
    if messages and isinstance(messages[0], Error):
        raise SessionEnded(f"{messages[0].code}: {messages[0].message}")
    got = ", ".join(type(m).__name__.lower() for m in messages)
    raise ProtocolError("unexpected_message", f"expected {kind.__name__.lower()}, got {got}")


def describe(exc: BaseException) -> str:
    if isinstance(exc, websockets.ConnectionClosed) and exc.rcvd is not None:
        code, reason = exc.rcvd.code, exc.rcvd.reason
        if code == CLOSE_AUTH_FAILED:
            return f"authentication refused: {reason} (re-enrol the agent if its identity was revoked)"
        if code == CLOSE_UNSUPPORTED_VERSION:
            return f"protocol version refused: {reason}"
        return f"closed by the control plane ({code}): {reason}"
    if isinstance(exc, websockets.InvalidStatus):
        return f"handshake refused with HTTP {exc.response.status_code}"
    if isinstance(exc, websockets.InvalidProxyStatus):
        status, phrase = exc.response.status_code, exc.response.reason_phrase
        hint = ": check the proxy user and password (control.proxy_credential)" if status in (401, 407) else ""
        return f"the proxy refused the tunnel with HTTP {status} {phrase}{hint}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
