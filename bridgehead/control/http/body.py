"""Reading a request: its JSON body (size-limited, decoded and validated by msgspec in one
pass) and its numeric query parameters, each fault a 4xx naming what is wrong."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request

from bridgehead.control.errors import ApiError, BadRequest

T = TypeVar("T")

# An over-long body is read to the end (and dropped) up to this much, so the client gets
# its 413 instead of a connection reset; beyond it the connection is simply closed.
DISCARD_LIMIT = 16 * 1024 * 1024


async def _discard(request: Request, limit: int, seconds: float = 3.0) -> None:
    """Read and drop the rest of a refused body (up to ``limit`` bytes and ``seconds``)."""

    async def drain() -> None:
        drained = 0
        async for chunk in request.stream():
            drained += len(chunk)
            if drained > limit:
                return

    try:
        await asyncio.wait_for(drain(), seconds)
    except (TimeoutError, ClientDisconnect):
        pass


async def read_body(request: Request, kind: type[T], limit: int) -> T:
    """The body decoded as ``kind``: 413 over ``limit`` bytes, 422 if it does not fit."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        await _discard(request, DISCARD_LIMIT)
        raise ApiError(f"request body of {length} bytes is over the {limit}-byte limit", code="too_large", status=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            await _discard(request, DISCARD_LIMIT)
            raise ApiError(f"request body over {limit} bytes", code="too_large", status=413)
    if not body:
        raise BadRequest("empty body: send a JSON object", code="invalid_json")
    try:
        decoded: T = msgspec.json.decode(bytes(body), type=kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"not valid JSON: {exc}", code="invalid_json") from None
    return decoded


def query_number(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name}={raw!r} must be between {low:g} and {high:g}")
    return value


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    return int(query_number(request, name, default, low, high))
