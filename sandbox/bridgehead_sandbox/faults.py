"""Injected faults: what a flaky instance or network does to a client, on demand; and the
request counts that let a test see what happened (``GET /sandbox/stats``).

Sans-I/O: :meth:`Faults.decide` says what to do with the next request (wait, then pass it on,
answer it 5xx, or drop the connection without answering); the HTTP layer carries it out.
Faults apply to the ServiceNow endpoints (``/api/...``, ``/oauth_token.do``), never to the
``/sandbox/...`` admin endpoints, so a test can always turn them off again.

Precedence for one request: an outage (every request, ``outage_mode``) first, then a drop
(``drop_every``-th request, or with probability ``drop_rate``), then an error
(``error_every``-th, or ``error_rate``). Latency (``latency_ms`` plus up to
``latency_jitter_ms``) comes before whatever follows, drops and errors included.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from bridgehead_sandbox.config import FaultsSection


@dataclasses.dataclass(frozen=True)
class FaultAction:
    delay_s: float
    kind: Literal["pass", "error", "drop"]
    status: int = 0


PASS = FaultAction(0.0, "pass")


class Faults:
    def __init__(
        self, section: FaultsSection, clock: Callable[[], float] = time.monotonic, seed: int | None = None
    ) -> None:
        self._clock = clock
        # Not for security: which requests fail. A seed makes a run repeatable.
        self._random = random.Random(seed)  # noqa: S311
        self.section = section
        self._count = 0
        self._outage_until = 0.0
        self.configure(section)

    def configure(self, section: FaultsSection) -> None:
        """Replace the settings; counting for ``*_every`` restarts, an outage starts now."""
        self.section = section
        self._count = 0
        self._outage_until = self._clock() + section.outage_s if section.outage_s > 0 else 0.0

    @property
    def active(self) -> bool:
        s = self.section
        return bool(
            s.latency_ms or s.latency_jitter_ms or s.error_rate or s.error_every or s.drop_rate or s.drop_every
        ) or (self._outage_until > self._clock())

    def decide(self) -> FaultAction:
        s = self.section
        if not self.active:
            return PASS
        self._count += 1
        delay = (s.latency_ms + (self._random.uniform(0, s.latency_jitter_ms) if s.latency_jitter_ms else 0)) / 1000
        if self._outage_until > self._clock():
            kind: Literal["pass", "error", "drop"] = "drop" if s.outage_mode == "drop" else "error"
        elif self._hit(s.drop_every, s.drop_rate):
            kind = "drop"
        elif self._hit(s.error_every, s.error_rate):
            kind = "error"
        else:
            kind = "pass"
        return FaultAction(delay, kind, s.error_status if kind == "error" else 0)

    def _hit(self, every: int, rate: float) -> bool:
        return (every > 0 and self._count % every == 0) or (rate > 0 and self._random.random() < rate)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self.section)
        out["outage_remaining_s"] = round(max(0.0, self._outage_until - self._clock()), 3)
        out["requests_seen"] = self._count
        return out


class Stats:
    """Request counts for ``GET /sandbox/stats``: all, by status, by endpoint (``"POST import.insertMultiple"``),
    and dropped connections."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.time()
        self.requests = 0
        self.dropped = 0
        self.by_status: collections.Counter[int] = collections.Counter()
        self.by_endpoint: collections.Counter[str] = collections.Counter()

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "dropped": self.dropped,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "by_endpoint": dict(sorted(self.by_endpoint.items())),
            "uptime_s": round(time.time() - self.started, 3),
        }
