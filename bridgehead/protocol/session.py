"""The session state machine of the agent channel, sans-I/O.

A session turns frames into messages and messages into frames, and enforces the order of
the handshake::

    control plane                     agent
    ── challenge(nonce) ───────────▶
                       ◀─────────── hello(identity, signature(nonce), plugins, held jobs)
    ── welcome(timing, resume) ────▶
    ═══════════ open: offers, credit, records, acks, heartbeats, ... ═══════════

Nothing here does I/O or awaits; the control plane's gateway and the agent's connection
pump bytes through it, and the tests drive it with plain calls. ``send`` encodes one message;
``codec.pack`` joins encoded messages into frames; ``receive`` takes a frame and returns its
messages, each checked against the session's state in order.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Sequence

import msgspec

from bridgehead.protocol import codec
from bridgehead.protocol.errors import ProtocolError, UnexpectedMessage
from bridgehead.protocol.messages import (
    AgentMessage,
    Challenge,
    Error,
    Hello,
    Records,
    ServerMessage,
    Welcome,
)

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class State(enum.Enum):
    HANDSHAKE = "in handshake"
    OPEN = "open"
    CLOSED = "closed"


class _Session:
    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self.state = State.HANDSHAKE

    def _check_open(self, message: msgspec.Struct) -> None:
        if self.state is State.CLOSED:
            raise UnexpectedMessage(type(message).__name__.lower(), self.state.value)
        if self.state is State.HANDSHAKE and not isinstance(message, Error):
            raise UnexpectedMessage(type(message).__name__.lower(), self.state.value)

    def fail(self) -> None:
        """The connection is going away; nothing more may pass."""
        self.state = State.CLOSED


class ServerSession(_Session):
    """The control plane's end: sends the challenge, expects hello, then runs open."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        super().__init__(max_message_bytes)
        self.challenge: Challenge | None = None
        self.hello: Hello | None = None

    def send(self, message: ServerMessage) -> bytes:
        if isinstance(message, Challenge):
            if self.state is not State.HANDSHAKE or self.challenge is not None:
                raise UnexpectedMessage("challenge", "a challenge was sent already")
            self.challenge = message
        elif isinstance(message, Welcome):
            if self.state is not State.HANDSHAKE or self.hello is None:
                raise UnexpectedMessage("welcome", "no hello was received")
            self.state = State.OPEN
        else:
            self._check_open(message)
        return codec.encode(message)

    def receive(self, frame: bytes | str) -> list[AgentMessage]:
        messages = codec.decode_agent_frame(frame, self.max_message_bytes)
        for message in messages:
            if isinstance(message, Hello):
                if (
                    self.state is not State.HANDSHAKE
                    or self.challenge is None
                    or self.hello is not None
                    or len(messages) > 1
                ):
                    raise UnexpectedMessage("hello", "hello was not expected")
                self.hello = message
            else:
                self._check_open(message)
                if isinstance(message, Records):
                    _check_objects(message)
        return messages


_is_object = operator.methodcaller("startswith", b"{")


def _check_objects(message: Records) -> None:
    """Each record must be a JSON object (the codec kept them raw, unparsed)."""
    # One C-level pass (a million-row query sends ~100k records a second); the loop below
    # only runs to name the culprit.
    if all(map(_is_object, map(bytes, message.records))):
        return
    for i, raw in enumerate(message.records):
        if bytes(memoryview(raw)[:1]) != b"{":
            raise ProtocolError(
                "invalid_message", f"record {message.seq + i} of job {message.job_id} is not a JSON object"
            )


class AgentSession(_Session):
    """The agent's end: expects the challenge, sends hello, waits for welcome."""

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        super().__init__(max_message_bytes)
        self.challenge: Challenge | None = None
        self.hello_sent = False

    def send(self, message: AgentMessage) -> bytes:
        if isinstance(message, Hello):
            if self.state is not State.HANDSHAKE or self.challenge is None or self.hello_sent:
                raise UnexpectedMessage("hello", "no challenge is pending")
            self.hello_sent = True
        else:
            self._check_open(message)
        return codec.encode(message)

    def send_records(self, job_id: str, attempt: int, seq: int, arrays: Sequence[bytes]) -> bytes:
        """``send(Records(...))`` for records that come as JSON arrays (``codec.encode_records``)."""
        if self.state is not State.OPEN:
            raise UnexpectedMessage("records", self.state.value)
        return codec.encode_records(job_id, attempt, seq, arrays)

    def receive(self, frame: bytes | str) -> list[ServerMessage]:
        messages = codec.decode_server_frame(frame, self.max_message_bytes)
        for message in messages:
            self._receive_one(message)
        return messages

    def _receive_one(self, message: ServerMessage) -> None:
        if isinstance(message, Challenge):
            if self.state is not State.HANDSHAKE or self.challenge is not None:
                raise UnexpectedMessage("challenge", "a challenge was received already")
            self.challenge = message
        elif isinstance(message, Welcome):
            if not self.hello_sent or self.state is not State.HANDSHAKE:
                raise UnexpectedMessage("welcome", "hello was not sent")
            self.state = State.OPEN
            # The server may lower the frame limit; never raise it past ours.
            self.max_message_bytes = min(self.max_message_bytes, message.max_message_bytes)
        else:
            self._check_open(message)


__all__ = ["AgentSession", "ProtocolError", "ServerSession", "State"]
