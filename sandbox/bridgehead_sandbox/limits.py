"""Bounds: the inbound REST rate limit, the request body size, and the URL length.

Rate limit (SERVICENOW_API.md §5): a fixed window of ``per_seconds`` (an instance's is one
hour; tests want seconds), counted per user or for everyone together. Windows are counted from
when the limit was set (start-up, or ``POST /sandbox/rate_limit``) rather than from the clock
hour, so that a test that sets a limit and then sends requests never straddles a window edge. Every API request the
rule covers carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` (not an instance header;
clients must not depend on it), ``X-RateLimit-Reset`` (Unix time of the next window) and
``X-RateLimit-Rule``; a request over the limit is answered 429 with ``Retry-After`` (whole
seconds) and the documented body.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request

from bridgehead_sandbox.config import RateLimitSection
from bridgehead_sandbox.errors import SnError

# The rule's "sys_id" in X-RateLimit-Rule: instances name the rule record; the sandbox has one.
RULE_SYS_ID = "0000000000000000000000000000ba5e"
_DRAIN_LIMIT = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class RateDecision:
    allowed: bool
    headers: dict[str, str]


class RateLimiter:
    def __init__(self, section: RateLimitSection, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.section = section
        self._origin = clock()
        self._windows: dict[str, tuple[int, int]] = {}  # who -> (window number, requests in it)

    def configure(self, section: RateLimitSection) -> None:
        self.section = section
        self._origin = self._clock()
        self._windows.clear()

    def check(self, user: str) -> RateDecision | None:
        """Count one request by ``user``; None when no rule applies."""
        limit, per = self.section.requests, self.section.per_seconds
        if limit <= 0:
            return None
        now = self._clock()
        window = math.floor((now - self._origin) / per)
        who = user if self.section.scope == "user" else "*"
        if len(self._windows) > 10_000:  # users are few; this only bounds a pathological config
            self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
        seen_window, count = self._windows.get(who, (window, 0))
        count = count + 1 if seen_window == window else 1
        self._windows[who] = (window, count)
        reset_at = self._origin + (window + 1) * per
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - count)),
            "X-RateLimit-Reset": str(math.ceil(reset_at)),
            "X-RateLimit-Rule": RULE_SYS_ID,
        }
        if count <= limit:
            return RateDecision(True, headers)
        headers["Retry-After"] = str(max(1, math.ceil(reset_at - now)))
        return RateDecision(False, headers)

    def exceeded(self, decision: RateDecision, api: str) -> SnError:
        limit, per = self.section.requests, self.section.per_seconds
        span = "hour" if per == 3600 else f"{per:g} seconds"
        return SnError(
            429,
            "Rate limit exceeded",
            f"Rate limit of {limit} requests per {span} for {api} exceeded",
            decision.headers,
        )


async def read_body(request: Request, max_bytes: int, status: int) -> bytes:
    """The request body, or an ``SnError`` if it is over ``max_bytes``. An oversized body is
    still read (and dropped, up to 64 MiB) so that the client, still sending, gets the answer
    rather than a reset connection."""
    declared = request.headers.get("content-length", "")
    chunks: list[bytes] = []
    size = 0
    over = declared.isdigit() and int(declared) > max_bytes
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            over = True
        if over:
            chunks.clear()
            if size > _DRAIN_LIMIT:
                break
        else:
            chunks.append(chunk)
    if over:
        raise SnError(
            status, "Request body too large", f"the request body is over {max_bytes} bytes (limits.max_body_bytes)"
        )
    return b"".join(chunks)


def request_target_bytes(scope: Mapping[str, Any]) -> int:
    """The length of the request target as sent: the path (still percent-encoded) and the query."""
    raw_path = scope.get("raw_path")
    path = bytes(raw_path) if raw_path else str(scope.get("path", "")).encode()
    query = bytes(scope.get("query_string", b""))
    return len(path) + (1 + len(query) if query else 0)


def check_url_length(scope: Mapping[str, Any], limit: int) -> None:
    """400 for a request target longer than ``limit`` bytes, as an instance's front end answers
    one past its request-header limit (Tomcat ``maxHttpHeaderSize``, 8 KiB by default;
    ServiceNow KB0826932). A client that needs a longer query uses the Batch API."""
    size = request_target_bytes(scope)
    if size > limit:
        raise SnError(
            400,
            "Request header is too large",
            f"the URL (path and query) is {size} bytes; this instance accepts at most {limit}"
            " (limits.max_url_bytes): split the query, or send it through POST /api/now/v1/batch",
        )
