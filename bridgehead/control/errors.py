"""Errors of the HTTP layer itself (the services' own are ``services.errors``).

    ApiError                 answered as ``{"error": {"code", "message"}}`` with ``status``
    ├── BadRequest           422: the request's body or query does not fit the contract
    └── Unauthorized         401: no bearer token sent

Also 413 (``ApiError(status=413)``) for a body over ``server.max_request_bytes``. Handlers
raise these, services raise theirs; ``http.responses`` renders both, mapping a service
error's class to its status. Anything else is a bug, logged with its traceback and answered
as a 500 with no detail.
"""

from __future__ import annotations


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    status = 422
    code = "invalid_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"
