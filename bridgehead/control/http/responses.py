"""JSON answers, and the one place errors become HTTP statuses.

Bodies of errors are ``{"error": {"code", "message"}}``: ``ApiError`` (the HTTP layer's own,
``bridgehead.control.errors``) carries its status; a service's error gets the status of its
class from ``STATUSES`` (as httpx maps lower-layer exceptions at its boundary).
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from bridgehead.control.errors import ApiError
from bridgehead.control.services.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    ServiceError,
    Unauthenticated,
)

_encoder = msgspec.json.Encoder()

# Most specific first: the first class an error is an instance of gives its status.
STATUSES: tuple[tuple[type[ServiceError], int], ...] = (
    (Invalid, 422),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


def error_body(code: str, message: str, status: int) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status)


def status_of(exc: ServiceError) -> int:
    return next((status for kind, status in STATUSES if isinstance(exc, kind)), 400)


def error_response(exc: ApiError | ServiceError) -> Response:
    status = exc.status if isinstance(exc, ApiError) else status_of(exc)
    return error_body(exc.code, exc.message, status)
