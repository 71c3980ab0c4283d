"""Turning a response into records (pure; no I/O).

``response_record`` makes the one ``{"status", "headers", "body"}`` record. ``items_at``
finds the array at a ``records_path`` without building the rest of the document: msgspec
decodes into a chain of one-field structs ending in ``list[msgspec.Raw]``, so other keys are
skipped and each element stays a zero-copy slice of the body until it is emitted. Memory is
then the body once, plus one element at a time.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Iterable
from typing import Any

import msgspec

from bridgehead.sdk import JobError

_decode_any = msgspec.json.Decoder()


def response_record(
    status: int,
    headers: Iterable[tuple[str, str]],
    content_type: str,
    charset: str | None,
    body: bytes | bytearray,
) -> dict[str, Any]:
    """The record of a whole response; names are lower-cased, repeated headers joined by ', '."""
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return {"status": status, "headers": merged, **_body_fields(content_type, charset, body)}


def _body_fields(content_type: str, charset: str | None, body: bytes | bytearray) -> dict[str, Any]:
    if content_type in ("application/json", "text/json") or content_type.endswith("+json"):
        try:
            return {"body": _decode_any.decode(body)}
        except msgspec.DecodeError:
            pass  # says JSON but is not: record what came, as text or base64, rather than fail
        except RecursionError:
            raise JobError("response body is JSON nested too deep to decode", code="bad_response") from None
    try:
        return {"body": body.decode(charset or "utf-8")}
    except LookupError:  # an unknown charset name: UTF-8 is the best guess
        try:
            return {"body": body.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    except UnicodeDecodeError:
        pass
    return {"body": base64.b64encode(body).decode("ascii"), "body_encoding": "base64"}


def items_at(body: bytes | bytearray, records_path: str) -> list[msgspec.Raw]:
    """The elements of the array at ``records_path``; ``bad_response`` if there is none."""
    try:
        found: Any = msgspec.json.decode(body, type=_path_type(records_path))
    except msgspec.ValidationError as exc:
        raise JobError(
            f"records_path {records_path!r} is not an array in the response: {exc}", code="bad_response"
        ) from None
    except msgspec.DecodeError as exc:
        raise JobError(f"response body is not valid JSON: {exc}", code="bad_response") from None
    except RecursionError:
        raise JobError("response body is JSON nested too deep to decode", code="bad_response") from None
    for _ in records_path.split("."):
        found = found.v
    items: list[msgspec.Raw] = found
    return items


def item_record(raw: msgspec.Raw) -> dict[str, Any]:
    """A record for one array element; records are JSON objects, so others are wrapped."""
    try:
        value = _decode_any.decode(raw)
    except RecursionError:
        raise JobError("a record in the response is JSON nested too deep to decode", code="bad_response") from None
    return value if isinstance(value, dict) else {"value": value}


@functools.lru_cache(maxsize=128)
def _path_type(records_path: str) -> Any:
    """``{"a": {"b": [...]}}`` for ``"a.b"``, as structs of one field ``v`` renamed to the key."""
    shape: Any = list[msgspec.Raw]
    for key in reversed(records_path.split(".")):
        shape = msgspec.defstruct("AtKey", [("v", shape)], rename={"v": key})
    return shape
