"""The shapes of what the services answer (``views`` builds them as plain dicts, the hot
path's cheapest form): msgspec structs for the OpenAPI description, and for tests that check
a view against its shape."""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class ErrorBody(msgspec.Struct):
    code: str
    message: str


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


class Job(msgspec.Struct):
    id: str
    plugin: str
    cluster: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    attempt: int
    max_attempts: int
    agent: str | None
    error: ErrorBody | None
    record_count: int
    timeout_s: float
    idempotency_key: str | None
    cancel_requested: bool
    params: dict[str, Any]
    sink: dict[str, Any] | None
    progress: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None


class RecordsPage(msgspec.Struct):
    records: list[dict[str, Any]]
    next: int | None
    attempt: int


class Agent(msgspec.Struct):
    name: str
    cluster: str
    connected: bool
    version: str
    plugins: list[str]
    running: int
    draining: bool
    connections: list[str]
    enrolled_at: float
    last_seen: float | None
    certificate_expires_at: float | None
    revoked: bool
    node: str | None = None  # with several nodes: the other node its session is on


class Node(msgspec.Struct):
    """A control-plane node sharing the store (``GET /api/v1/nodes``)."""

    id: str
    url: str
    version: str
    alive: bool  # not stopped, and heard from within node_dead_after_s
    this: bool  # the node that answered
    started_at: float
    heartbeat_at: float
    silent_s: float
    stopped_at: float | None
    agents_connected: int
    running: int  # attempts it holds


class ApiToken(msgspec.Struct):
    id: str  # public: the start of the token's hash
    name: str
    role: Literal["viewer", "operator", "admin"]
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    revoked_at: float | None


class NewApiToken(ApiToken):
    token: str  # the secret, shown only in this answer


class AuditEntry(msgspec.Struct):
    id: int
    at: float
    actor: str  # an API token's id, or "cli", "enrollment-token"
    actor_name: str  # the token's label
    address: str  # the client's address, or "local" for the CLI
    action: str
    detail: dict[str, Any]


class AuditPage(msgspec.Struct):
    entries: list[AuditEntry]
    next: int | None
