"""What callers send: msgspec structs that decode and validate a request body in one pass.

Also the source of the OpenAPI description's request schemas (``bridgehead.control.openapi``),
so it cannot drift from what is accepted. Nothing here knows about HTTP.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]


class JobSubmit(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /api/v1/jobs``."""

    plugin: Name
    params: dict[str, Any]
    cluster: Name = "default"
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    sink: dict[str, Any] | None = None


class EnrollRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /api/v1/enroll`` (authenticated by the one-time token in the body): the token's
    secret part, and a CSR (PEM) for the key the agent made; the names come from here."""

    token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    agent: Name
    cluster: Name
    csr: Annotated[str, msgspec.Meta(min_length=1, max_length=16384)]


class ApiTokenRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /api/v1/tokens``: the token is in the answer, once."""

    role: Annotated[str, msgspec.Meta(pattern="^(viewer|operator|admin)$")]
    name: Annotated[str, msgspec.Meta(max_length=128)] = ""
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=10 * 365 * 86_400)] | None = None


class EnrollmentTokenRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    cluster: Name = "default"
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=30 * 86_400)] = 86_400.0
    uses: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1
    replace: Name | None = None
