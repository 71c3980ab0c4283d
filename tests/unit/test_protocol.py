"""Unit tests of the sans-I/O wire protocol: messages, codec, session state machines."""

from __future__ import annotations

import json
import string
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridgehead.protocol import (
    Abandon,
    Accept,
    Ack,
    AgentSession,
    Cancel,
    Challenge,
    Complete,
    CompleteAck,
    Credit,
    Drain,
    Error,
    ErrorInfo,
    Heartbeat,
    HeldJob,
    Hello,
    JobRef,
    MessageTooLarge,
    Offer,
    PluginInfo,
    Progress,
    ProtocolError,
    Records,
    Reject,
    ResumeJob,
    ServerSession,
    State,
    UnexpectedMessage,
    Welcome,
    decode_agent_frame,
    decode_server_frame,
    encode,
    pack,
)
from bridgehead.protocol.codec import MAX_MESSAGES_PER_FRAME
from bridgehead.protocol.errors import CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG
from bridgehead.protocol.session import DEFAULT_MAX_MESSAGE_BYTES

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Examples that draw whole lists of messages cost more to generate; fewer keep the file fast.
PROPERTY_COSTLY = settings(PROPERTY, max_examples=60)

CHALLENGE = Challenge(nonce="n" * 32, server_version="1.0")
HELLO = Hello(agent="agent-01", cluster="default", signature="c2lnbmF0dXJl")
WELCOME = Welcome(session_id="s-1", heartbeat_s=5.0, lease_s=15.0, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES)

# One fully populated example of every message, by direction.
SERVER_MESSAGES: list[Any] = [
    Challenge(nonce="0123456789abcdef0123", server_version="0.1.0"),
    Welcome(
        session_id="sess-9",
        heartbeat_s=2.5,
        lease_s=12.0,
        max_message_bytes=1 << 20,
        resume=[
            ResumeJob(job_id="job-1", attempt=2, action="continue", acked_seq=41),
            ResumeJob(job_id="job-2", attempt=1, action="abandon"),
        ],
    ),
    Offer(
        job_id="job-1", attempt=3, plugin="sql", params={"query": "select 1", "n": [1, 2.5, None, True]}, timeout_s=30
    ),
    Ack(job_id="job-1", attempt=3, seq=1000),
    CompleteAck(job_id="job-1", attempt=3),
    Cancel(job_id="job-1", attempt=3, reason="user asked"),
    Abandon(job_id="job-1", attempt=3, reason="fenced"),
    Heartbeat(running=[]),
    Error(code="auth_failed", message="bad signature"),
]
AGENT_MESSAGES: list[Any] = [
    Hello(
        agent="agent-01",
        cluster="eu",
        signature="c2ln",
        version="0.1.0",
        capacity=8,
        plugins=[PluginInfo(name="echo", version="1", params_schema={"type": "object"}), PluginInfo(name="rest")],
        connections=["hr_db", "local_api"],
        jobs=[HeldJob(job_id="job-7", attempt=1, state="running", next_seq=12), HeldJob("job-8", 2, "lost")],
    ),
    Credit(n=4),
    Drain(reason="SIGTERM"),
    Accept(job_id="job-1", attempt=1, safe_to_repeat=True),
    Reject(job_id="job-1", attempt=1, error=ErrorInfo(code="unknown_plugin", message="no 'x'", retryable=False)),
    Records(job_id="job-1", attempt=1, seq=1, records=[msgspec.Raw(b'{"a":1}'), msgspec.Raw(b'{"b":[true,null]}')]),
    Progress(job_id="job-1", attempt=1, done=5, total=10, message="half"),
    Complete(job_id="job-1", attempt=1, status="failed", record_count=2, error=ErrorInfo(code="x", retryable=True)),
    Heartbeat(running=[JobRef("job-1", 1), JobRef("job-2", 7)]),
    Error(code="shutdown", message="bye"),
]
# What may not pass before the handshake is over (``error`` may pass at any time).
SERVER_OPEN_ONLY = [m for m in SERVER_MESSAGES if not isinstance(m, Challenge | Welcome | Error)]
AGENT_OPEN_ONLY = [m for m in AGENT_MESSAGES if not isinstance(m, Hello | Error)]


def _id(message: Any) -> str:
    return type(message).__name__.lower()


def open_pair(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> tuple[ServerSession, AgentSession]:
    """Run the handshake between two fresh sessions and return them open."""
    server, agent = ServerSession(max_message_bytes), AgentSession(max_message_bytes)
    agent.receive(server.send(CHALLENGE))
    server.receive(agent.send(HELLO))
    agent.receive(server.send(WELCOME))
    return server, agent


# --- handshake ---------------------------------------------------------------------------


def test_handshake_passes_each_message_and_opens_both_sides() -> None:
    """challenge -> hello -> welcome delivers each message intact and leaves both sessions open."""
    server, agent = ServerSession(), AgentSession()
    assert State.HANDSHAKE == server.state
    assert State.HANDSHAKE == agent.state

    assert [CHALLENGE] == agent.receive(server.send(CHALLENGE))
    assert CHALLENGE == agent.challenge
    assert [HELLO] == server.receive(agent.send(HELLO))
    assert State.HANDSHAKE == server.state
    assert [WELCOME] == agent.receive(server.send(WELCOME))

    assert State.OPEN == server.state
    assert State.OPEN == agent.state


def test_open_sessions_carry_traffic_both_ways() -> None:
    """Once open, agent messages reach the server and server messages reach the agent."""
    server, agent = open_pair()
    assert [Credit(n=3)] == server.receive(agent.send(Credit(n=3)))
    offer = SERVER_MESSAGES[2]
    assert [offer] == agent.receive(server.send(offer))


def test_server_refuses_hello_before_its_challenge() -> None:
    """A hello that arrives before the server sent its challenge is unexpected."""
    server = ServerSession()
    with pytest.raises(UnexpectedMessage) as info:
        server.receive(encode(HELLO))
    assert "unexpected_message" == info.value.code


@pytest.mark.parametrize("message", AGENT_OPEN_ONLY, ids=_id)
def test_server_refuses_open_messages_during_handshake(message: Any) -> None:
    """Any agent message but hello and error, received before welcome, is unexpected."""
    server = ServerSession()
    server.send(CHALLENGE)
    with pytest.raises(UnexpectedMessage):
        server.receive(encode(message))
    server.receive(encode(HELLO))
    with pytest.raises(UnexpectedMessage):
        server.receive(encode(message))


def test_server_accepts_error_during_handshake() -> None:
    """An agent may say why it is closing even before the handshake is over."""
    server = ServerSession()
    error = Error(code="bad_challenge", message="nonce too short")
    assert [error] == server.receive(encode(error))


def test_server_refuses_a_second_hello_before_welcome() -> None:
    """A second hello on one connection is refused, even while the handshake is still running."""
    server = ServerSession()
    server.send(CHALLENGE)
    server.receive(encode(HELLO))
    with pytest.raises(UnexpectedMessage):
        server.receive(encode(HELLO))


def test_server_refuses_hello_once_open() -> None:
    """A hello after welcome is refused."""
    server, _agent = open_pair()
    with pytest.raises(UnexpectedMessage):
        server.receive(encode(HELLO))


def test_server_sends_only_one_challenge() -> None:
    """The server cannot send a second challenge."""
    server = ServerSession()
    server.send(CHALLENGE)
    with pytest.raises(UnexpectedMessage):
        server.send(CHALLENGE)


def test_server_cannot_challenge_once_open() -> None:
    """A challenge after welcome is refused."""
    server, _agent = open_pair()
    with pytest.raises(UnexpectedMessage):
        server.send(Challenge(nonce="m" * 32))


@pytest.mark.parametrize("message", SERVER_OPEN_ONLY, ids=_id)
def test_server_cannot_send_open_messages_during_handshake(message: Any) -> None:
    """The server cannot send offers, acks, heartbeats... before welcome."""
    server = ServerSession()
    server.send(CHALLENGE)
    server.receive(encode(HELLO))
    with pytest.raises(UnexpectedMessage):
        server.send(message)


def test_server_cannot_welcome_twice() -> None:
    """A second welcome is refused."""
    server, _agent = open_pair()
    with pytest.raises(UnexpectedMessage):
        server.send(WELCOME)


def test_server_cannot_welcome_before_hello() -> None:
    """The server cannot open a session it has not authenticated: welcome needs a hello first."""
    server = ServerSession()
    server.send(CHALLENGE)
    with pytest.raises(UnexpectedMessage):
        server.send(WELCOME)
    assert State.HANDSHAKE == server.state


def test_agent_refuses_welcome_before_challenge() -> None:
    """A welcome that arrives first is unexpected."""
    agent = AgentSession()
    with pytest.raises(UnexpectedMessage):
        agent.receive(encode(WELCOME))
    assert State.HANDSHAKE == agent.state


def test_agent_refuses_welcome_before_it_sent_hello() -> None:
    """A welcome between challenge and hello is unexpected."""
    agent = AgentSession()
    agent.receive(encode(CHALLENGE))
    with pytest.raises(UnexpectedMessage):
        agent.receive(encode(WELCOME))
    assert State.HANDSHAKE == agent.state


@pytest.mark.parametrize("message", SERVER_OPEN_ONLY, ids=_id)
def test_agent_refuses_open_messages_during_handshake(message: Any) -> None:
    """Offers, acks, heartbeats... before welcome are unexpected, at each step of the handshake."""
    agent = AgentSession()
    with pytest.raises(UnexpectedMessage):
        agent.receive(encode(message))
    agent.receive(encode(CHALLENGE))
    with pytest.raises(UnexpectedMessage):
        agent.receive(encode(message))
    agent.send(HELLO)
    with pytest.raises(UnexpectedMessage):
        agent.receive(encode(message))


def test_agent_accepts_error_during_handshake() -> None:
    """The server may say why it is closing before welcome (a failed signature, say)."""
    agent = AgentSession()
    agent.receive(encode(CHALLENGE))
    agent.send(HELLO)
    error = Error(code="auth_failed", message="bad signature")
    assert [error] == agent.receive(encode(error))


def test_agent_refuses_a_second_challenge() -> None:
    """A second challenge on one connection is unexpected."""
    agent = AgentSession()
    agent.receive(encode(CHALLENGE))
    with pytest.raises(UnexpectedMessage):
        agent.receive(encode(Challenge(nonce="m" * 32)))
    assert CHALLENGE == agent.challenge


def test_agent_refuses_challenge_once_open() -> None:
    """A challenge after welcome is unexpected."""
    _server, agent = open_pair()
    with pytest.raises(UnexpectedMessage):
        agent.receive(encode(Challenge(nonce="m" * 32)))


def test_agent_cannot_send_hello_before_challenge() -> None:
    """The agent has nothing to sign before the challenge, so hello is refused."""
    agent = AgentSession()
    with pytest.raises(UnexpectedMessage):
        agent.send(HELLO)
    assert False is agent.hello_sent


def test_agent_cannot_send_hello_twice() -> None:
    """One hello per connection."""
    agent = AgentSession()
    agent.receive(encode(CHALLENGE))
    agent.send(HELLO)
    with pytest.raises(UnexpectedMessage):
        agent.send(HELLO)


@pytest.mark.parametrize("message", AGENT_OPEN_ONLY, ids=_id)
def test_agent_cannot_send_open_messages_during_handshake(message: Any) -> None:
    """Credit, records, completions... cannot be sent before welcome."""
    agent = AgentSession()
    with pytest.raises(UnexpectedMessage):
        agent.send(message)
    agent.receive(encode(CHALLENGE))
    agent.send(HELLO)
    with pytest.raises(UnexpectedMessage):
        agent.send(message)


def test_agent_may_send_error_during_handshake() -> None:
    """The agent may say why it gives up before welcome."""
    agent = AgentSession()
    error = Error(code="bad_challenge")
    assert encode(error) == agent.send(error)


def test_welcome_lowers_the_agents_frame_limit() -> None:
    """The server's smaller max_message_bytes becomes the agent's limit, enforced on later frames."""
    agent = AgentSession(max_message_bytes=1 << 20)
    agent.receive(encode(CHALLENGE))
    agent.send(HELLO)
    agent.receive(encode(Welcome(session_id="s", heartbeat_s=1, lease_s=3, max_message_bytes=8192)))
    assert 8192 == agent.max_message_bytes

    frame = encode(Cancel(job_id="j", attempt=1, reason="x" * 8192))
    assert 8192 < len(frame)
    with pytest.raises(MessageTooLarge):
        agent.receive(frame)


def test_welcome_never_raises_the_agents_frame_limit() -> None:
    """A server offering a larger limit than the agent's own leaves the agent's limit alone."""
    agent = AgentSession(max_message_bytes=8192)
    agent.receive(encode(CHALLENGE))
    agent.send(HELLO)
    agent.receive(encode(Welcome(session_id="s", heartbeat_s=1, lease_s=3, max_message_bytes=1 << 30)))
    assert 8192 == agent.max_message_bytes


def test_failed_server_session_refuses_everything() -> None:
    """After fail(), the server session neither sends nor receives anything, errors included."""
    server, _agent = open_pair()
    server.fail()
    assert State.CLOSED == server.state
    for message in [*AGENT_OPEN_ONLY, Error(code="x"), HELLO]:
        with pytest.raises(UnexpectedMessage):
            server.receive(encode(message))
    for message in [*SERVER_OPEN_ONLY, Error(code="x"), WELCOME, CHALLENGE]:
        with pytest.raises(UnexpectedMessage):
            server.send(message)


def test_failed_agent_session_refuses_everything_once_open() -> None:
    """After fail(), an open agent session neither sends nor receives anything, errors included."""
    _server, agent = open_pair()
    agent.fail()
    assert State.CLOSED == agent.state
    for message in [*SERVER_OPEN_ONLY, Error(code="x"), WELCOME, CHALLENGE]:
        with pytest.raises(UnexpectedMessage):
            agent.receive(encode(message))
    for message in [*AGENT_OPEN_ONLY, Error(code="x"), HELLO]:
        with pytest.raises(UnexpectedMessage):
            agent.send(message)


def test_failed_agent_session_refuses_a_challenge() -> None:
    """A closed agent session refuses a challenge, even if none had arrived before it failed."""
    agent = AgentSession()
    agent.fail()
    with pytest.raises(UnexpectedMessage):
        agent.receive(encode(CHALLENGE))


def test_failed_agent_session_cannot_send_hello() -> None:
    """A closed agent session cannot send its hello, even with a challenge pending."""
    agent = AgentSession()
    agent.receive(encode(CHALLENGE))
    agent.fail()
    with pytest.raises(UnexpectedMessage):
        agent.send(HELLO)


def test_unexpected_message_names_type_and_state() -> None:
    """UnexpectedMessage says which message came and in what state, and closes with 1002."""
    server = ServerSession()
    server.send(CHALLENGE)
    with pytest.raises(UnexpectedMessage) as info:
        server.receive(encode(Credit(n=1)))
    assert "unexpected_message" == info.value.code
    assert CLOSE_PROTOCOL_ERROR == info.value.close_code
    assert "'credit' is not allowed while in handshake" == info.value.message


# --- codec: round trips ------------------------------------------------------------------


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=_id)
def test_server_messages_round_trip(message: Any) -> None:
    """Every control-plane message decodes to what was encoded."""
    assert [message] == decode_server_frame(encode(message), DEFAULT_MAX_MESSAGE_BYTES)


@pytest.mark.parametrize("message", AGENT_MESSAGES, ids=_id)
def test_agent_messages_round_trip(message: Any) -> None:
    """Every agent message decodes to what was encoded."""
    assert [message] == decode_agent_frame(encode(message), DEFAULT_MAX_MESSAGE_BYTES)


@pytest.mark.parametrize("message", AGENT_MESSAGES, ids=_id)
def test_agent_messages_round_trip_from_text_frames(message: Any) -> None:
    """A text frame (str) decodes like the same bytes."""
    assert [message] == decode_agent_frame(encode(message).decode(), DEFAULT_MAX_MESSAGE_BYTES)


def test_frames_carry_the_type_tag() -> None:
    """Each frame is one JSON object whose ``type`` names the message."""
    for message in [*SERVER_MESSAGES, *AGENT_MESSAGES]:
        assert _id(message).replace("completeack", "complete_ack") == json.loads(encode(message))["type"]


def test_job_refs_travel_as_pairs() -> None:
    """A heartbeat lists running attempts as [job_id, attempt] pairs."""
    frame = encode(Heartbeat(running=[JobRef("job-1", 3)]))
    assert {"type": "heartbeat", "running": [["job-1", 3]]} == json.loads(frame)


def test_records_are_kept_raw() -> None:
    """Records reach the control plane as the exact bytes the agent encoded, unparsed."""
    frame = b'{"type":"records","job_id":"j","attempt":1,"seq":7,"records":[{"b":2,"a":1.50}]}'
    [message] = decode_agent_frame(frame, DEFAULT_MAX_MESSAGE_BYTES)
    assert [b'{"b":2,"a":1.50}'] == [bytes(r) for r in message.records]


def test_defaults_fill_missing_optional_fields() -> None:
    """Optional fields may be left out of the frame."""
    frame = b'{"type":"complete","job_id":"j","attempt":1,"status":"succeeded"}'
    expected = Complete(job_id="j", attempt=1, status="succeeded", record_count=0, error=None)
    assert [expected] == decode_agent_frame(frame, DEFAULT_MAX_MESSAGE_BYTES)


# --- frames holding several messages ----------------------------------------------------


def test_pack_joins_messages_into_one_frame_in_order() -> None:
    """Messages that fit the limit together travel in one frame and arrive in order."""
    server, agent = open_pair()
    messages = [m for m in AGENT_MESSAGES if not isinstance(m, Hello)]
    frames = list(pack((agent.send(m) for m in messages), DEFAULT_MAX_MESSAGE_BYTES))
    assert 1 == len(frames)
    assert messages == server.receive(frames[0])


def test_pack_sends_a_lone_message_unwrapped() -> None:
    """A frame with one message is that message's JSON object, not an array."""
    frame = encode(Credit(n=1))
    assert [frame] == list(pack([frame], 1000))


def test_pack_of_nothing_yields_no_frame() -> None:
    """No messages, no frames."""
    assert [] == list(pack([], 1000))


def test_pack_splits_at_the_byte_limit() -> None:
    """No packed frame exceeds the limit, and together they carry every message in order."""
    parts = [encode(Drain(reason="x" * n)) for n in range(40)]
    limit = 200
    frames = list(pack(parts, limit))
    assert 1 < len(frames)
    assert all(len(f) <= limit for f in frames)
    decoded = [m for f in frames for m in decode_agent_frame(f, limit)]
    assert [Drain(reason="x" * n) for n in range(40)] == decoded


def test_pack_splits_exactly_at_the_limit() -> None:
    """Two messages whose joined frame is one byte over the limit go separately; with room they join."""
    first, second = encode(Credit(n=1)), encode(Drain(reason="abc"))
    joined = b"[" + first + b"," + second + b"]"
    assert [first, second] == list(pack([first, second], len(joined) - 1))
    assert [joined] == list(pack([first, second], len(joined) + 1))


def test_pack_sends_an_oversized_message_alone() -> None:
    """A message bigger than the limit goes in a frame of its own (the receiver's limit decides)."""
    small, big = encode(Credit(n=1)), encode(Drain(reason="x" * 500))
    assert [small, big, small] == list(pack([small, big, small], 100))


def test_pack_caps_messages_per_frame() -> None:
    """No frame carries more than MAX_MESSAGES_PER_FRAME messages, whatever the byte limit."""
    part = encode(Heartbeat())
    frames = list(pack([part] * (MAX_MESSAGES_PER_FRAME + 1), 1 << 30))
    assert [MAX_MESSAGES_PER_FRAME, 1] == [len(decode_agent_frame(f, 1 << 30)) for f in frames]


def test_frame_with_the_most_messages_is_accepted() -> None:
    """A frame of exactly MAX_MESSAGES_PER_FRAME messages decodes."""
    frame = b"[" + b",".join([encode(Heartbeat())] * MAX_MESSAGES_PER_FRAME) + b"]"
    assert MAX_MESSAGES_PER_FRAME == len(decode_server_frame(frame, 1 << 30))


def test_frame_with_too_many_messages_is_invalid() -> None:
    """A frame of more than MAX_MESSAGES_PER_FRAME messages is refused."""
    frame = b"[" + b",".join([encode(Heartbeat())] * (MAX_MESSAGES_PER_FRAME + 1)) + b"]"
    with pytest.raises(ProtocolError) as info:
        decode_agent_frame(frame, 1 << 30)
    assert "invalid_message" == info.value.code


def test_empty_frame_array_is_invalid() -> None:
    """A frame holding an empty array carries no message and is refused."""
    for session in open_pair():
        with pytest.raises(ProtocolError) as info:
            session.receive(b"[]")
        assert "invalid_message" == info.value.code


def test_nested_frame_arrays_are_invalid() -> None:
    """A frame is one array of messages, not an array of arrays."""
    with pytest.raises(ProtocolError) as info:
        decode_agent_frame(b'[[{"type":"heartbeat"}]]', 1000)
    assert "invalid_message" == info.value.code


def test_one_bad_message_refuses_the_whole_frame() -> None:
    """A frame with one invalid message among valid ones is refused."""
    server, _agent = open_pair()
    with pytest.raises(ProtocolError) as info:
        server.receive(b'[{"type":"credit","n":1},{"type":"credit","n":0}]')
    assert "invalid_message" == info.value.code


def test_records_check_applies_inside_a_frame_of_several() -> None:
    """A records message whose element is not an object is refused when packed with others."""
    server, agent = open_pair()
    bad = b'{"type":"records","job_id":"j","attempt":1,"seq":3,"records":[[1]]}'
    frame = next(pack([agent.send(Credit(n=1)), bad], DEFAULT_MAX_MESSAGE_BYTES))
    with pytest.raises(ProtocolError) as info:
        server.receive(frame)
    assert "record 3 of job j is not a JSON object" == info.value.message


def test_hello_must_travel_alone() -> None:
    """A hello packed with anything else is refused."""
    server = ServerSession()
    server.send(CHALLENGE)
    with pytest.raises(UnexpectedMessage):
        server.receive(next(pack([encode(HELLO), encode(Error(code="x"))], DEFAULT_MAX_MESSAGE_BYTES)))


def test_server_checks_each_message_of_a_frame_against_the_state() -> None:
    """Open-only messages packed behind an error during the handshake are refused."""
    server = ServerSession()
    server.send(CHALLENGE)
    with pytest.raises(UnexpectedMessage):
        server.receive(next(pack([encode(Error(code="x")), encode(Credit(n=1))], DEFAULT_MAX_MESSAGE_BYTES)))


def test_agent_applies_welcome_before_the_messages_after_it() -> None:
    """Messages packed behind a welcome are checked in the state the welcome opened."""
    agent = AgentSession()
    agent.receive(encode(CHALLENGE))
    agent.send(HELLO)
    ack = Ack(job_id="j", attempt=1, seq=1)
    assert [WELCOME, ack] == agent.receive(next(pack([encode(WELCOME), encode(ack)], DEFAULT_MAX_MESSAGE_BYTES)))
    assert State.OPEN == agent.state


def test_agent_refuses_messages_packed_before_the_welcome() -> None:
    """An open-only message ahead of the welcome in one frame is refused."""
    agent = AgentSession()
    agent.receive(encode(CHALLENGE))
    agent.send(HELLO)
    ack = Ack(job_id="j", attempt=1, seq=1)
    with pytest.raises(UnexpectedMessage):
        agent.receive(next(pack([encode(ack), encode(WELCOME)], DEFAULT_MAX_MESSAGE_BYTES)))


# --- codec: limits and errors ------------------------------------------------------------


def _frame_of_size(size: int) -> bytes:
    base = encode(Drain(reason=""))
    frame = encode(Drain(reason="x" * (size - len(base))))
    assert size == len(frame)
    return frame


def test_frame_at_the_limit_is_accepted() -> None:
    """A frame of exactly max_message_bytes decodes."""
    server, _agent = open_pair(max_message_bytes=5000)
    [message] = server.receive(_frame_of_size(5000))
    assert isinstance(message, Drain)


def test_frame_over_the_limit_is_too_large() -> None:
    """One byte over max_message_bytes raises MessageTooLarge, close code 1009."""
    server, _agent = open_pair(max_message_bytes=5000)
    with pytest.raises(MessageTooLarge) as info:
        server.receive(_frame_of_size(5001))
    assert CLOSE_TOO_BIG == info.value.close_code
    assert 1009 == info.value.close_code
    assert "message_too_large" == info.value.code
    assert (5001, 5000) == (info.value.size, info.value.limit)
    assert isinstance(info.value, ProtocolError)


def test_size_limit_counts_utf8_bytes_of_text_frames() -> None:
    """A text frame is measured in UTF-8 bytes, not in characters."""
    base = len(encode(Drain(reason="")))
    text = encode(Drain(reason="é" * 100)).decode()
    assert base + 100 == len(text)
    with pytest.raises(MessageTooLarge):
        decode_agent_frame(text, base + 150)


def test_size_limit_is_checked_before_parsing() -> None:
    """Even garbage over the limit is reported as too large, not malformed."""
    with pytest.raises(MessageTooLarge):
        decode_server_frame(b"\x00" * 5000, 4999)


def test_close_reason_fits_a_websocket_close_frame() -> None:
    """The close reason is cut to 123 bytes of UTF-8, the most a close frame holds."""
    error = ProtocolError("invalid_message", "é" * 200)
    assert 123 >= len(error.close_reason.encode())
    assert error.close_reason.startswith("invalid_message: é")


@pytest.mark.parametrize(
    "frame",
    [b"", b"{", b"not json", b'{"type":"heartbeat"', b'{"type":"heartbeat"}}', b"\xff\xfe", b"{'type':'heartbeat'}"],
)
def test_malformed_json_is_a_protocol_error(frame: bytes) -> None:
    """Frames that are not JSON raise ProtocolError with code malformed_message."""
    for session in open_pair():
        with pytest.raises(ProtocolError) as info:
            session.receive(frame)
        assert "malformed_message" == info.value.code
        assert CLOSE_PROTOCOL_ERROR == info.value.close_code


@pytest.mark.parametrize(
    "frame",
    [
        b"[]",
        b"42",
        b'"credit"',
        b"{}",
        b'{"n":1}',
        b'{"type":"nonsense"}',
        b'{"type":"credit"}',
        b'{"type":"credit","n":0}',
        b'{"type":"credit","n":"1"}',
        b'{"type":"credit","n":1.5}',
        b'{"type":"accept","job_id":"","attempt":1}',
        b'{"type":"accept","job_id":"has space","attempt":1}',
        b'{"type":"accept","job_id":"j","attempt":0}',
        b'{"type":"records","job_id":"j","attempt":1,"seq":1,"records":[]}',
        b'{"type":"records","job_id":"j","attempt":1,"seq":0,"records":[{}]}',
        b'{"type":"complete","job_id":"j","attempt":1,"status":"done"}',
        b'{"type":"heartbeat","running":[["j"]]}',
        b'{"type":"drain","reason":' + json.dumps("x" * 8193).encode() + b"}",
    ],
)
def test_schema_violations_from_the_agent_are_invalid(frame: bytes) -> None:
    """Well-formed JSON that is not a valid agent message raises ProtocolError invalid_message."""
    server, _agent = open_pair()
    with pytest.raises(ProtocolError) as info:
        server.receive(frame)
    assert "invalid_message" == info.value.code


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"challenge","nonce":"short"}',
        b'{"type":"welcome","session_id":"s","heartbeat_s":0,"lease_s":1,"max_message_bytes":4096}',
        b'{"type":"welcome","session_id":"s","heartbeat_s":1,"lease_s":1,"max_message_bytes":4095}',
        b'{"type":"offer","job_id":"j","attempt":1,"plugin":"p","params":[],"timeout_s":1}',
        b'{"type":"ack","job_id":"j","attempt":1,"seq":-1}',
        b'{"type":"ack","job_id":"j","attempt":1}',
    ],
)
def test_schema_violations_from_the_server_are_invalid(frame: bytes) -> None:
    """Well-formed JSON that is not a valid server message raises ProtocolError invalid_message."""
    agent = AgentSession()
    with pytest.raises(ProtocolError) as info:
        agent.receive(frame)
    assert "invalid_message" == info.value.code


@pytest.mark.parametrize("message", [m for m in SERVER_MESSAGES if not isinstance(m, Heartbeat | Error)], ids=_id)
def test_server_only_messages_are_refused_from_the_agent(message: Any) -> None:
    """A server-only message fed to ServerSession.receive is refused as invalid (direction)."""
    server, _agent = open_pair()
    with pytest.raises(ProtocolError) as info:
        server.receive(encode(message))
    assert "invalid_message" == info.value.code


@pytest.mark.parametrize("message", [m for m in AGENT_MESSAGES if not isinstance(m, Heartbeat | Error)], ids=_id)
def test_agent_only_messages_are_refused_from_the_server(message: Any) -> None:
    """An agent-only message fed to AgentSession.receive is refused as invalid (direction)."""
    _server, agent = open_pair()
    with pytest.raises(ProtocolError) as info:
        agent.receive(encode(message))
    assert "invalid_message" == info.value.code


@pytest.mark.parametrize("element", [b"3", b'"text"', b"[1,2]", b"null", b"true", b"1.5"])
def test_server_refuses_records_that_are_not_objects(element: bytes) -> None:
    """A records batch with an element that is not a JSON object is refused, naming its seq."""
    server, _agent = open_pair()
    frame = b'{"type":"records","job_id":"job-1","attempt":1,"seq":5,"records":[{"a":1},' + element + b"]}"
    with pytest.raises(ProtocolError) as info:
        server.receive(frame)
    assert "invalid_message" == info.value.code
    assert "record 6 of job job-1 is not a JSON object" == info.value.message


def test_server_accepts_records_with_whitespace_around_objects() -> None:
    """Whitespace around each record does not hide that it is an object."""
    server, _agent = open_pair()
    frame = b'{"type":"records","job_id":"j","attempt":1,"seq":1,"records":[ {"a":1} ,\n\t{} ]}'
    [message] = server.receive(frame)
    assert [b'{"a":1}', b"{}"] == [bytes(r) for r in message.records]


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"drain","reason":"\xff"}',
        b'{"type":"drain","reason":"\xed\xa0\x80"}',
        b'{"type":"progress","job_id":"j","attempt":1,"message":"ab\xc3"}',
    ],
    ids=["invalid-start-byte", "encoded-surrogate", "truncated-sequence"],
)
def test_invalid_utf8_in_strings_is_a_protocol_error(frame: bytes) -> None:
    """Bytes that are not UTF-8 inside a JSON string raise ProtocolError, not UnicodeDecodeError."""
    server, _agent = open_pair()
    with pytest.raises(ProtocolError) as info:
        server.receive(frame)
    assert "malformed_message" == info.value.code


def test_server_refuses_records_that_are_not_utf8() -> None:
    """A record holding bytes that are not UTF-8 is not JSON, so the batch is refused."""
    server, _agent = open_pair()
    frame = b'{"type":"records","job_id":"j","attempt":1,"seq":1,"records":[{"a":"\xff"}]}'
    with pytest.raises(ProtocolError) as info:
        server.receive(frame)
    assert info.value.code in ("malformed_message", "invalid_message")


def test_lone_surrogate_in_a_text_frame_is_a_protocol_error() -> None:
    """A str frame holding a lone surrogate raises ProtocolError, not UnicodeEncodeError."""
    _server, agent = open_pair()
    with pytest.raises(ProtocolError):
        agent.receive('{"type":"cancel","job_id":"j","attempt":1,"reason":"\ud800"}')


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_deeply_nested_params_are_a_protocol_error(depth: int) -> None:
    """Nesting deep enough to exhaust the decoder's recursion raises ProtocolError, not RecursionError."""
    _server, agent = open_pair()
    frame = (
        b'{"type":"offer","job_id":"j","attempt":1,"plugin":"p","timeout_s":1,"params":{"a":'
        + b"[" * depth
        + b"]" * depth
        + b"}}"
    )
    assert len(frame) < agent.max_message_bytes
    with pytest.raises(ProtocolError):
        agent.receive(frame)


def test_deeply_nested_records_are_a_protocol_error() -> None:
    """A record nested deep enough to exhaust the decoder's recursion raises ProtocolError."""
    server, _agent = open_pair()
    depth = 100_000
    frame = (
        b'{"type":"records","job_id":"j","attempt":1,"seq":1,"records":[{"a":' + b"[" * depth + b"]" * depth + b"}]}"
    )
    with pytest.raises(ProtocolError):
        server.receive(frame)


# --- property-based ----------------------------------------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)

job_ids = st.text(alphabet=string.ascii_letters + string.digits + "_.:-", min_size=1, max_size=64)
names = st.text(min_size=1, max_size=40)
texts = st.text(max_size=60)
attempts = st.integers(min_value=1, max_value=1_000_000)
seqs = st.integers(min_value=0, max_value=2**63 - 1)
short = st.text(max_size=64)
codes = st.text(min_size=1, max_size=64)
error_infos = st.builds(ErrorInfo, code=codes, message=texts, retryable=st.booleans())
job_refs = st.builds(JobRef, job_id=job_ids, attempt=attempts)
raw_records = st.lists(json_objects.map(lambda o: msgspec.Raw(msgspec.json.encode(o))), min_size=1, max_size=5)

heartbeats = st.builds(Heartbeat, running=st.lists(job_refs, max_size=5))
errors = st.builds(Error, code=codes, message=texts)

server_messages = st.one_of(
    st.builds(Challenge, nonce=st.text(min_size=16, max_size=128), server_version=short),
    st.builds(
        Welcome,
        session_id=names,
        heartbeat_s=st.floats(min_value=0, max_value=3600, exclude_min=True),
        lease_s=st.floats(min_value=0, max_value=86400, exclude_min=True),
        max_message_bytes=st.integers(min_value=4096, max_value=2**40),
        resume=st.lists(
            st.builds(
                ResumeJob,
                job_id=job_ids,
                attempt=attempts,
                action=st.sampled_from(["continue", "abandon"]),
                acked_seq=seqs,
            ),
            max_size=4,
        ),
    ),
    st.builds(
        Offer,
        job_id=job_ids,
        attempt=attempts,
        plugin=names,
        params=json_objects,
        timeout_s=st.floats(min_value=0, exclude_min=True, allow_infinity=False),
    ),
    st.builds(Ack, job_id=job_ids, attempt=attempts, seq=seqs),
    st.builds(CompleteAck, job_id=job_ids, attempt=attempts),
    st.builds(Cancel, job_id=job_ids, attempt=attempts, reason=texts),
    st.builds(Abandon, job_id=job_ids, attempt=attempts, reason=texts),
    heartbeats,
    errors,
)
agent_messages = st.one_of(
    st.builds(
        Hello,
        agent=names,
        cluster=names,
        signature=st.text(min_size=1, max_size=512),
        version=short,
        capacity=st.integers(min_value=0, max_value=100_000),
        plugins=st.lists(
            st.builds(PluginInfo, name=names, version=short, params_schema=st.none() | json_objects), max_size=3
        ),
        connections=st.lists(names, max_size=3),
        jobs=st.lists(
            st.builds(
                HeldJob,
                job_id=job_ids,
                attempt=attempts,
                state=st.sampled_from(["running", "done", "lost"]),
                next_seq=seqs,
            ),
            max_size=3,
        ),
    ),
    st.builds(Credit, n=st.integers(min_value=1, max_value=100_000)),
    st.builds(Drain, reason=texts),
    st.builds(Accept, job_id=job_ids, attempt=attempts, safe_to_repeat=st.booleans()),
    st.builds(Reject, job_id=job_ids, attempt=attempts, error=error_infos),
    st.builds(
        Records, job_id=job_ids, attempt=attempts, seq=st.integers(min_value=1, max_value=2**62), records=raw_records
    ),
    st.builds(
        Progress,
        job_id=job_ids,
        attempt=attempts,
        done=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
        total=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
        message=texts,
    ),
    st.builds(
        Complete,
        job_id=job_ids,
        attempt=attempts,
        status=st.sampled_from(["succeeded", "failed", "cancelled"]),
        record_count=seqs,
        error=st.none() | error_infos,
    ),
    heartbeats,
    errors,
)
any_messages = server_messages | agent_messages


def _all_sessions() -> list[ServerSession | AgentSession]:
    """Fresh sessions in each state a frame can meet: handshake (before and after challenge) and open."""
    server_waiting = ServerSession()
    server_waiting.send(CHALLENGE)
    agent_challenged = AgentSession()
    agent_challenged.receive(encode(CHALLENGE))
    agent_challenged.send(HELLO)
    return [ServerSession(), server_waiting, AgentSession(), agent_challenged, *open_pair()]


def _must_be_message_or_protocol_error(frame: bytes | str) -> None:
    for session in _all_sessions():
        try:
            messages = session.receive(frame)
        except ProtocolError:
            continue
        assert isinstance(messages, list)
        assert 1 <= len(messages)
        assert all(isinstance(m, msgspec.Struct) for m in messages)


@PROPERTY
@given(st.binary(max_size=512))
def test_random_bytes_give_a_message_or_protocol_error(frame: bytes) -> None:
    """Arbitrary bytes never raise anything but ProtocolError."""
    _must_be_message_or_protocol_error(frame)


@PROPERTY
@given(json_values)
def test_random_json_gives_a_message_or_protocol_error(value: Any) -> None:
    """Arbitrary JSON values never raise anything but ProtocolError."""
    frame = json.dumps(value)
    _must_be_message_or_protocol_error(frame)
    _must_be_message_or_protocol_error(frame.encode())


_TAGS = [
    "challenge",
    "welcome",
    "offer",
    "ack",
    "complete_ack",
    "cancel",
    "abandon",
    "heartbeat",
    "error",
    "hello",
    "credit",
    "drain",
    "accept",
    "reject",
    "records",
    "progress",
    "complete",
]
_FIELDS = [
    "nonce",
    "session_id",
    "heartbeat_s",
    "max_message_bytes",
    "resume",
    "job_id",
    "attempt",
    "plugin",
    "params",
    "timeout_s",
    "seq",
    "running",
    "code",
    "agent",
    "cluster",
    "signature",
    "plugins",
    "jobs",
    "n",
    "records",
    "error",
    "status",
    "done",
]


@PROPERTY_COSTLY
@given(
    st.sampled_from(_TAGS),
    st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=6), json_values, max_size=8),
)
def test_tagged_random_objects_give_a_message_or_protocol_error(tag: str, fields: dict[str, Any]) -> None:
    """Objects with a real type tag and random fields never raise anything but ProtocolError."""
    _must_be_message_or_protocol_error(json.dumps({**fields, "type": tag}).encode())


@PROPERTY
@given(any_messages, st.data())
def test_truncated_frames_give_a_message_or_protocol_error(message: Any, data: st.DataObject) -> None:
    """Every prefix of a valid frame gives a message or ProtocolError."""
    frame = encode(message)
    cut = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    _must_be_message_or_protocol_error(frame[:cut])


_mutations = st.one_of(
    st.tuples(st.just("replace"), st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.just(0)),
)


def _mutate(frame: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(frame)
    for kind, position, byte in mutations:
        i = position % (len(data) + 1)
        if kind == "insert":
            data.insert(i, byte)
        elif data and kind == "replace":
            data[i % len(data)] = byte
        elif data:
            del data[i % len(data)]
    return bytes(data)


@PROPERTY
@given(any_messages, st.lists(_mutations, min_size=1, max_size=4))
def test_mutated_frames_give_a_message_or_protocol_error(message: Any, mutations: list[tuple[str, int, int]]) -> None:
    """Random byte edits of a valid frame give a message or ProtocolError."""
    _must_be_message_or_protocol_error(_mutate(encode(message), mutations))


@PROPERTY_COSTLY
@given(
    st.lists(agent_messages.filter(lambda m: not isinstance(m, Hello)), min_size=1, max_size=8),
    st.integers(min_value=64, max_value=4096),
)
def test_packed_frames_respect_the_limit_and_round_trip(messages: list[Any], limit: int) -> None:
    """pack() never exceeds the limit except with a lone oversized message, and the frames decode,
    in order, to exactly the messages packed."""
    _server, agent = open_pair()
    parts = [agent.send(m) for m in messages]
    frames = list(pack(parts, limit))
    assert all(len(f) <= limit or f in parts for f in frames)
    assert messages == [m for f in frames for m in decode_agent_frame(f, 1 << 30)]


@PROPERTY
@given(server_messages)
def test_generated_server_messages_round_trip(message: Any) -> None:
    """Any valid control-plane message decodes to exactly what was encoded."""
    assert [message] == decode_server_frame(encode(message), 1 << 30)


@PROPERTY
@given(agent_messages)
def test_generated_agent_messages_round_trip(message: Any) -> None:
    """Any valid agent message decodes to exactly what was encoded."""
    assert [message] == decode_agent_frame(encode(message), 1 << 30)


@PROPERTY_COSTLY
@given(st.lists(agent_messages.filter(lambda m: not isinstance(m, Hello)), min_size=1, max_size=5))
def test_generated_agent_messages_pass_through_open_sessions(messages: list[Any]) -> None:
    """Valid agent messages sent through an open AgentSession arrive intact at the ServerSession."""
    server, agent = open_pair()
    assert messages == [r for m in messages for r in server.receive(agent.send(m))]


@PROPERTY_COSTLY
@given(st.lists(server_messages.filter(lambda m: not isinstance(m, Challenge | Welcome)), min_size=1, max_size=5))
def test_generated_server_messages_pass_through_open_sessions(messages: list[Any]) -> None:
    """Valid server messages sent through an open ServerSession arrive intact at the AgentSession."""
    server, agent = open_pair()
    assert messages == [r for m in messages for r in agent.receive(server.send(m))]
