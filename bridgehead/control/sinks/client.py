"""``InstanceClient``: every request the sinks make to one ServiceNow instance.

aiohttp, chosen by measurement (docs/choices.md: ~4,000 requests/s with 32 in flight here,
where httpx's async client managed ~250). Per instance, shared by all its deliveries:

- at most ``max_in_flight`` requests at once, and ``max_requests_per_s`` (a token bucket);
- a 429 pauses the whole instance for its ``Retry-After`` (else until ``X-RateLimit-Reset``,
  else backoff), since every request of ours counts against the same limit;
- timeouts, dropped connections, 5xx, 429, 202 and a 200 "Transaction cancelled" (the
  instance's transaction quota) are retried with exponential backoff and
  full jitter (up to ``backoff_max_s``), ``max_retries`` times (an instance answers 202 when
  too many transactions wait on one session);
- no cookies: an instance sets ``JSESSIONID`` and load-balancer cookies and runs one
  transaction at a time per session, so a client that sends them back queues its parallel
  requests behind each other (and gets 202s). Each request stands alone, authenticated by its
  ``Authorization`` header;
- a 401 renews the token once and tries again; a second 401 is ``AuthFailed``.

Any other answer (2xx, 4xx) goes back to the caller, which knows what it means for a record.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import msgspec

from bridgehead.control.metrics import Metrics
from bridgehead.control.sinks.auth import Authenticator, AuthFailed, RefreshTokens, TokenUnavailable
from bridgehead.control.sinks.config import ServiceNowInstance
from bridgehead.control.sinks.instance_schema import SchemaCache
from bridgehead.control.sinks.pace import TransformPace

log = logging.getLogger("bridgehead.control.sinks")

_BACKOFF_BASE_S = 0.5
_MAX_THROTTLED = 10_000
_encoder = msgspec.json.Encoder()


class InstanceUnavailable(Exception):
    """Retries ran out: the instance stayed down, slow or rate-limited."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # decoded JSON, or None

    def error_message(self) -> str:
        """ServiceNow's ``{"error": {"message", "detail"}}``, as one line."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(error, dict):
            parts = [str(error.get("message") or ""), str(error.get("detail") or "")]
            return ": ".join(p for p in parts if p) or f"HTTP {self.status}"
        return f"HTTP {self.status}"


class TokenBucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)  # at most a second's worth at once
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.paused_until = 0.0
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self.paused_until:
                    await asyncio.sleep(self.paused_until - now)
                    continue
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)
        self.tokens = 0


class InstanceClient:
    def __init__(
        self, name: str, instance: ServiceNowInstance, tokens: RefreshTokens, metrics: Metrics | None = None
    ) -> None:
        self.name = name
        self.metrics = metrics
        self.instance = instance
        self.auth = Authenticator(name, instance, tokens)
        self.bucket = TokenBucket(instance.max_requests_per_s)
        self._slots = asyncio.Semaphore(instance.max_in_flight)
        self._session: aiohttp.ClientSession | None = None
        # The instance's table definitions (sys_db_object / sys_dictionary), shared by its deliveries.
        self.schemas = SchemaCache(instance.schema_ttl_s)
        # How soon its asynchronous import sets are transformed, learned (import_rows).
        self.transform_pace = TransformPace(instance.import_poll_s, ceiling_s=instance.import_poll_s * 10)
        self._counters: dict[str, Any] = {}  # status -> its sink_responses child, looked up once

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            instance = self.instance
            context: ssl.SSLContext | bool = True
            if instance.ca_file:
                context = ssl.create_default_context(cafile=instance.ca_file)
            elif not instance.verify:
                context = False
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=instance.max_in_flight, ssl=context),
                timeout=aiohttp.ClientTimeout(total=instance.timeout_s),
                cookie_jar=aiohttp.DummyCookieJar(),  # no session stickiness (module docstring)
                # A list answer's Link header repeats the request URL up to four times (first,
                # prev, next, last): room for that, at our longest URL.
                max_line_size=max(8190, 5 * instance.max_url_bytes + 4096),
                max_field_size=max(8190, 5 * instance.max_url_bytes + 4096),
                headers={"Accept": "application/json", "User-Agent": "bridgehead-sink"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> Answer:
        instance = self.instance
        url = instance.base_url + path
        body = _encoder.encode(json) if json is not None else None
        renewed = False
        # 429s with a Retry-After are the instance pacing us, not failing: they are counted
        # apart, with a far higher cap, so a tight rate limit slows a delivery but never fails it.
        attempt = throttled = 0
        while attempt <= instance.max_retries and throttled <= _MAX_THROTTLED:
            await self.bucket.take()
            try:
                async with self._slots:
                    header = await self.auth.header(self.session())
                    headers = {"Authorization": header}
                    if body is not None:
                        headers["Content-Type"] = "application/json"
                    async with self.session().request(
                        method, url, data=body, params=params, headers=headers
                    ) as response:
                        status, raw, hints = response.status, await response.read(), response.headers
            except (aiohttp.ClientError, TimeoutError, TokenUnavailable) as exc:
                self._count("error")
                problem = f"{method} {path}: {exc or type(exc).__name__}"
                await self._back_off(attempt, problem)
                attempt += 1
                continue
            self._count(str(status))
            if status == 401 and instance.auth != "basic" and not renewed:
                renewed = True
                self.auth.invalidate(header)
                continue
            if status == 401:
                raise AuthFailed(f"the instance refused the credentials (HTTP 401 on {method} {path})")
            if status == 429:
                wait = _retry_after(hints)
                problem = f"{method} {path}: rate limited (429)"
                if wait is not None:
                    throttled += 1
                    self.bucket.pause(wait)
                    log.info("servicenow %s: %s; pausing %.1f s as asked", self.name, problem, wait)
                    continue
                await self._back_off(attempt, problem)
                attempt += 1
                continue
            if status == 202 and (method != "POST" or _queued(raw)):
                # "Too many transactions queued on the session": nothing was done; send again.
                await self._back_off(attempt, f"{method} {path}: HTTP 202 (transactions queued on the session)")
                attempt += 1
                continue
            if status == 200 and _cancelled(raw):
                # The transaction quota cancelled it after it started (KB1297438: a 200 with the
                # error envelope); an import set row sent again is coalesced, so send again.
                await self._back_off(attempt, f"{method} {path}: transaction cancelled by the instance's quota")
                attempt += 1
                continue
            if status >= 500 or status == 408:
                await self._back_off(attempt, f"{method} {path}: HTTP {status}")
                attempt += 1
                continue
            return Answer(status, _decode(raw))
        raise InstanceUnavailable(
            f"servicenow {self.name}: gave up after {instance.max_retries} retries (max_retries); "
            "the delivery resumes with POST /api/v1/jobs/ID/sync/retry"
        )

    def _count(self, status: str) -> None:
        if self.metrics is None:
            return
        counter = self._counters.get(status)
        if counter is None:
            counter = self._counters[status] = self.metrics.sink_responses.labels(self.name, status)
        counter.inc()

    async def _back_off(self, attempt: int, problem: str) -> None:
        delay = random.uniform(0, min(self.instance.backoff_max_s, _BACKOFF_BASE_S * 2**attempt))  # noqa: S311
        log.warning("servicenow %s: %s; retry %d in %.1f s", self.name, problem, attempt + 1, delay)
        await asyncio.sleep(delay)


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait: ``Retry-After`` (seconds or an HTTP date), else ``X-RateLimit-Reset``."""
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, min(3600.0, float(reset) - time.time()))
        except ValueError:
            return None
    return None


def _cancelled(raw: bytes) -> bool:
    """A 200 whose body is only the error envelope "Transaction cancelled: ..."."""
    if b"Transaction cancelled" not in raw[:4096]:
        return False
    body = _decode(raw)
    return isinstance(body, dict) and "result" not in body and isinstance(body.get("error"), dict)


def _queued(raw: bytes) -> bool:
    """Whether a 202 is the instance's "too many transactions queued" (not an accepted write)."""
    body = _decode(raw)
    if not isinstance(body, dict):
        return True
    return "result" not in body and "import_set_id" not in body


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
