"""Frames to messages and back: JSON via msgspec, validated against the message types while
decoding (one pass, no intermediate dicts).

A frame holds one message (a JSON object) or several (a JSON array of objects). Senders
pack what they have ready into as few frames as the size limit allows: on a busy agent one
frame carries the records, completions and credit of many jobs, which saves a system call
and a frame per message on both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec

from bridgehead.protocol.errors import MessageTooLarge, ProtocolError
from bridgehead.protocol.messages import AgentMessage, Records, ServerMessage

MAX_MESSAGES_PER_FRAME = 10_000

_encoder = msgspec.json.Encoder()
_agent_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(AgentMessage | list[AgentMessage])
_server_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(ServerMessage | list[ServerMessage])


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def encode_records(job_id: str, attempt: int, seq: int, arrays: Sequence[bytes]) -> bytes:
    """A ``records`` message whose records come as JSON arrays of encoded objects, spliced in
    as they are: the same bytes as ``encode(Records(...))`` without a wrapper per record.
    The caller guarantees each array holds JSON objects only, and that there is at least one."""
    # ``records`` is the struct's last field: the message ends with ``"records":[]}``.
    head = _encoder.encode(Records(job_id=job_id, attempt=attempt, seq=seq, records=[]))
    body = b",".join([memoryview(array)[1:-1] for array in arrays])
    return b"".join((memoryview(head)[:-2], body, b"]}"))


def pack(encoded: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """Join encoded messages into frames of at most ``limit`` bytes (a lone message that is
    larger goes alone; the receiver's limit then decides)."""
    batch: list[bytes] = []
    size = 2
    for part in encoded:
        if batch and (size + len(part) + 1 > limit or len(batch) >= MAX_MESSAGES_PER_FRAME):
            yield batch[0] if len(batch) == 1 else b"[" + b",".join(batch) + b"]"
            batch, size = [], 2
        batch.append(part)
        size += len(part) + 1
    if batch:
        yield batch[0] if len(batch) == 1 else b"[" + b",".join(batch) + b"]"


def _decode(decoder: msgspec.json.Decoder[Any], frame: bytes | str, limit: int) -> list[Any]:
    data = frame.encode(errors="surrogatepass") if isinstance(frame, str) else frame
    if len(data) > limit:
        raise MessageTooLarge(len(data), limit)
    try:
        # msgspec validates JSON structure but not the UTF-8 inside strings it keeps raw
        # (records); a C-speed pass here keeps invalid text out of the store and the API.
        data.decode("utf-8")
        decoded = decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ProtocolError("invalid_message", str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError("malformed_message", str(exc)) from None
    if not isinstance(decoded, list):
        return [decoded]
    if not decoded or len(decoded) > MAX_MESSAGES_PER_FRAME:
        raise ProtocolError("invalid_message", f"a frame holds 1 to {MAX_MESSAGES_PER_FRAME} messages")
    return decoded


def decode_agent_frame(frame: bytes | str, limit: int) -> list[AgentMessage]:
    """Decode a frame the agent sent (the control plane's side of the channel)."""
    return _decode(_agent_decoder, frame, limit)


def decode_server_frame(frame: bytes | str, limit: int) -> list[ServerMessage]:
    """Decode a frame the control plane sent (the agent's side of the channel)."""
    return _decode(_server_decoder, frame, limit)
