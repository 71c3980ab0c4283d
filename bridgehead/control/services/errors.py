"""Errors of the control plane's services.

    ServiceError            ``code`` (stable, machine-readable) and ``message`` (for people)
    ├── Invalid             the request does not fit the contract (bad params, sink, template)
    │   └── LimitExceeded   it is over a configured limit (size, nesting depth)
    ├── Unauthenticated     no, unknown, revoked or expired credentials
    ├── Forbidden           the caller may not do this (a role too low, the wrong cluster)
    ├── NotFound            no such job, agent, token, sync or schedule
    └── Conflict            the thing is in the wrong state (a job ended, a key reused, ...)

They carry no HTTP status: the HTTP layer maps each class to one at its boundary
(``bridgehead.control.http.responses``), the scheduler records ``code`` and ``message`` as
a run's error.
"""

from __future__ import annotations


class ServiceError(Exception):
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def prefixed(self, prefix: str) -> ServiceError:
        """The same error (class and code), its message saying where: ``job: params.x: ...``."""
        return type(self)(f"{prefix}{self.message}", code=self.code)


class Invalid(ServiceError):
    code = "invalid_request"


class LimitExceeded(Invalid):
    code = "too_large"


class Unauthenticated(ServiceError):
    code = "unauthorized"


class Forbidden(ServiceError):
    code = "forbidden"


class NotFound(ServiceError):
    code = "not_found"


class Conflict(ServiceError):
    code = "conflict"
