"""Errors the sandbox answers with, in ServiceNow's envelope.

    SnError(status, message, detail)   -> {"error": {"message", "detail"}, "status": "failure"}

Raised anywhere below the HTTP layer (store, transform, auth) and turned into a response by
one exception handler, so every error has the instance's shape. The texts are those seen from
real instances where SERVICENOW_API.md records them.
"""

from __future__ import annotations


class SnError(Exception):
    def __init__(
        self, status: int, message: str, detail: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {message}: {detail}")
        self.status = status
        self.message = message
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "detail": self.detail}, "status": "failure"}


def invalid_table(name: str) -> SnError:
    return SnError(400, f"Invalid table {name}")


def no_record() -> SnError:
    return SnError(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")


def not_authenticated() -> SnError:
    return SnError(401, "User Not Authenticated", "Required to provide Auth information")


def unknown_uri() -> SnError:
    return SnError(400, "Requested URI does not represent any resource")


def bad_body(detail: str) -> SnError:
    return SnError(400, "Exception while reading request", detail)


def bad_request(message: str, detail: str | None = None) -> SnError:
    return SnError(400, message, detail)
