"""Sessions, as an instance keeps them: cookies on every answer, one transaction at a time each.

An instance answers every request with session cookies: ``JSESSIONID`` (the session),
``glide_user_route`` and the load balancer's ``BIGipServerpool_<instance>`` (the node the
session lives on). A request that sends ``JSESSIONID`` back joins that session, and the
platform runs **one transaction per session at a time** ("session synchronization",
ServiceNow KB0755706); the others wait in the session's queue. Beyond "Max Waiters" (10 by
default) waiting transactions, the next one is answered **202 Accepted** and never processed
(ServiceNow community blog "HTTP 202 from an inbound web service call"; the same limit of 10
in ServiceNow's "Understanding User Session Transactions and Instance Settings").
A request without the cookie gets a session of its own, so cookieless requests run in
parallel.

:class:`SessionLayer` is the outermost ASGI layer for ``/api/...`` and ``/oauth_token.do``.
Sessions are held in memory only (an instance's survive a node restart no better), at most
``sessions.max_sessions`` of them: idle ones expire after ``sessions.idle_timeout_s``, and the
least recently used idle one makes room for a new one.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import time
import zlib
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridgehead_sandbox.config import SessionsSection
from bridgehead_sandbox.faults import Stats
from bridgehead_sandbox.responses import STAND_IN_HEADER

SESSION_COOKIE = "JSESSIONID"
POOL_COOKIE = "BIGipServerpool_bridgehead_sandbox"
_STAND_IN = (STAND_IN_HEADER[0].lower().encode(), STAND_IN_HEADER[1].encode())


@dataclasses.dataclass
class Session:
    id: str
    route: str
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    waiters: int = 0
    last_used: float = 0.0

    @property
    def busy(self) -> bool:
        return self.lock.locked() or self.waiters > 0


class Sessions:
    def __init__(self, section: SessionsSection, clock: Callable[[], float] = time.monotonic) -> None:
        self.section = section
        self._clock = clock
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()
        self.rejected = 0  # answered 202

    def __len__(self) -> int:
        return len(self._sessions)

    def join(self, session_id: str | None) -> Session:
        """The session a request belongs to: the one its cookie names, if it is alive, else a new one."""
        now = self._clock()
        session = self._sessions.get(session_id) if session_id else None
        if session is not None and not session.busy and now - session.last_used > self.section.idle_timeout_s:
            del self._sessions[session.id]
            session = None
        if session is None:
            session = self._create(now)
        session.last_used = now
        self._sessions.move_to_end(session.id)
        return session

    def touch(self, session: Session) -> None:
        session.last_used = self._clock()

    def _create(self, now: float) -> Session:
        self._make_room(now)
        session_id = os.urandom(16).hex().upper()
        route = "glide." + os.urandom(16).hex()
        session = Session(session_id, route, last_used=now)
        self._sessions[session_id] = session
        return session

    def _make_room(self, now: float) -> None:
        """Bounded, amortised O(1): the dict is in order of last use, so expired sessions are at
        its front; drop those, else the least recently used idle one."""
        timeout = self.section.idle_timeout_s
        for _ in range(len(self._sessions)):
            session = next(iter(self._sessions.values()))
            if session.busy:  # a long transaction: look past it
                self._sessions.move_to_end(session.id)
            elif now - session.last_used > timeout or len(self._sessions) >= self.section.max_sessions:
                del self._sessions[session.id]
            else:
                break

    def set_cookies(self, session: Session, port: int) -> list[tuple[bytes, bytes]]:
        """The Set-Cookie headers of an answer. Not ``Secure``: the sandbox speaks plain HTTP
        and a client would not send a Secure cookie back over it."""
        pool = f"{zlib.crc32(session.route.encode()) % 1_000_000_000}.{port % 65536}.0000"
        return [
            (b"set-cookie", f"{SESSION_COOKIE}={session.id}; Path=/; HttpOnly; SameSite=None".encode()),
            (b"set-cookie", f"glide_user_route={session.route}; Path=/; HttpOnly; SameSite=None".encode()),
            (b"set-cookie", f"{POOL_COOKIE}={pool}; path=/; Httponly".encode()),
        ]


def cookie_value(scope: Scope, name: str) -> str | None:
    """One cookie's value from the request's Cookie headers (the last one wins)."""
    found = None
    for key, value in scope.get("headers", []):
        if key != b"cookie":
            continue
        for part in bytes(value).decode("latin-1").split(";"):
            k, sep, v = part.strip().partition("=")
            if sep and k == name:
                found = v.strip().strip('"')
    return found


class SessionLayer:
    """Session cookies and session synchronization around the rest of the sandbox."""

    def __init__(self, app: ASGIApp, sessions: Sessions, stats: Stats) -> None:
        self.app = app
        self.sessions = sessions
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not self.sessions.section.enabled or not (path.startswith("/api/") or path == "/oauth_token.do"):
            await self.app(scope, receive, send)
            return
        session = self.sessions.join(cookie_value(scope, SESSION_COOKIE))
        server = scope.get("server") or ("", 0)
        cookies = self.sessions.set_cookies(session, int(server[1] or 0))

        async def send_with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cookies]}
            await send(message)

        if session.lock.locked() and session.waiters >= self.sessions.section.max_waiters:
            # Too many transactions wait on this session: the instance accepts the request
            # and never runs it.
            self.sessions.rejected += 1
            self.stats.requests += 1
            self.stats.by_status[202] += 1
            await send_with_cookies(
                {"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0"), _STAND_IN]}
            )
            await send_with_cookies({"type": "http.response.body", "body": b""})
            return
        session.waiters += 1
        try:
            await session.lock.acquire()
        finally:
            session.waiters -= 1
        try:
            await self.app(scope, receive, send_with_cookies)
        finally:
            session.lock.release()
            self.sessions.touch(session)
