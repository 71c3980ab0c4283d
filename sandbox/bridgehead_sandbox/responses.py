"""JSON in and out, the way an instance speaks it (``application/json;charset=UTF-8``)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from bridgehead_sandbox.errors import SnError, bad_body
from bridgehead_sandbox.limits import read_body

CONTENT_TYPE = "application/json;charset=UTF-8"
STAND_IN_HEADER = ("X-Bridgehead-Sandbox", "stand-in")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(body), status_code=status, headers=headers, media_type=CONTENT_TYPE)


def error_response(exc: SnError) -> Response:
    return json_response(exc.body(), exc.status, exc.headers)


async def read_json(request: Request, max_bytes: int, oversize_status: int) -> Any:
    """The request's JSON body, or a 400 with the message instances give for a bad payload."""
    raw = await read_body(request, max_bytes, oversize_status)
    if not raw.strip():
        raise bad_body("The payload is empty.")
    try:
        return _decode(raw)
    except msgspec.DecodeError:
        raise bad_body("The payload is not valid JSON.") from None
