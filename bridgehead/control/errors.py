"""Errors of the control plane's API.

    ApiError                 answered as ``{"error": {"code", "message"}}`` with ``status``
    ├── BadRequest           400/422: the request does not fit the contract
    ├── Unauthorized         401: no or unknown bearer token
    ├── Forbidden            403: the token's role may not do this
    ├── NotFound             404
    └── Conflict             409: idempotency key reuse, a job in the wrong state

Handlers raise these; one exception handler renders them. Anything else is a bug, logged
with its traceback and answered as a 500 with no detail.
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


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"
