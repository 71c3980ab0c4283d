"""Pooled ODBC connections of one profile (and credential), at most ``pool_size`` of them.

A connection is set up once (time zone, read-only session) and then lent to one job at a time.
Before it is lent again it is health-checked (one round trip, which also reads back the
read-only state); one that fails the check, was idle too long, or broke during its job is
closed and replaced. Every call on a connection runs in that connection's own thread
(``SessionThread``), from its connect to its close.

The first connection also tells which driver is behind the profile (``SQL_DRIVER_NAME``),
which a DSN or a driver given by file path do not say: that picks the dialect, and if the
dialect streams with options the first connection lacked, it is replaced by one that has them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bridgehead.plugins.sql import odbc_string
from bridgehead.plugins.sql.dialects import Dialect, dialect_for
from bridgehead.plugins.sql.failures import job_error
from bridgehead.plugins.sql.params import SqlProfile
from bridgehead.plugins.sql.session_thread import SessionThread
from bridgehead.sdk import Credential, PolicyDenied, SourceError

log = logging.getLogger("bridgehead.plugins.sql")
T = TypeVar("T")

_SQL_DRIVER_NAME = 6  # SQLGetInfo
# How long closing the pool waits for busy sessions to come back and idle ones to close.
_CLOSE_WAIT_S = 10.0


@dataclass
class Session:
    """One pooled connection and what the pool knows of it."""

    connection: Any  # pyodbc.Connection
    dialect: Dialect
    thread: SessionThread  # the only thread that calls into ``connection`` (bar SQLCancel)
    last_used: float = field(default_factory=time.monotonic)
    reusable: bool = True


class Pool:
    def __init__(
        self,
        name: str,
        profile: SqlProfile,
        credential: Credential | None,
        pyodbc: Any,
    ) -> None:
        self.name = name
        self.profile = profile
        self._credential = credential
        self._pyodbc = pyodbc
        self._slots = asyncio.Semaphore(profile.pool_size)
        self._idle: list[Session] = []
        self._dialect: Dialect | None = None
        self._closed = False

    async def _on(self, thread: SessionThread, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(thread, fn, *args)

    async def acquire(self, wait_s: float) -> Session:
        """A healthy session; waits up to ``wait_s`` for a free slot."""
        try:
            async with asyncio.timeout(wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise SourceError(
                f"connection {self.name!r}: all {self.profile.pool_size} pooled connections stayed busy "
                f"for {wait_s:.3g} s (raise pool_size or the job's timeout)",
                code="pool_exhausted",
                retryable=True,
            ) from None
        try:
            return await self._take()
        except BaseException:
            self._slots.release()
            raise

    async def _take(self) -> Session:
        while self._idle:
            session = self._idle.pop()
            if time.monotonic() - session.last_used > self.profile.idle_timeout_s:
                self._close_later(session)
                continue
            if await self._on(session.thread, self._healthy, session):
                return session
            self._close_later(session)
        thread = SessionThread(f"sql-{self.name}")
        try:
            return await self._on(thread, self._open, thread)
        except BaseException:
            thread.shutdown(wait=False)
            raise

    def release(self, session: Session) -> None:
        """Return ``session`` after its job: rolled back and pooled, or closed if broken."""
        if not session.reusable:
            # Its thread may be stuck in a call that will never return: the slot is freed
            # now, and the connection closes whenever (if ever) its thread gets to it.
            self._close_later(session)
            self._slots.release()
            return
        future = asyncio.get_running_loop().run_in_executor(session.thread, self._reset, session)

        def returned(done: asyncio.Future[bool]) -> None:
            ok = not done.cancelled() and done.exception() is None and done.result()
            if ok and not self._closed:
                session.last_used = time.monotonic()
                self._idle.append(session)
            else:
                self._close_later(session)
            self._slots.release()

        future.add_done_callback(returned)

    async def aclose(self) -> None:
        self._closed = True
        # Sessions still being returned by a job that just ended: wait for them to land,
        # but not for ever (a job whose driver call hangs may never give its slot back).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_WAIT_S):
                for _ in range(self.profile.pool_size):
                    await self._slots.acquire()
        idle, self._idle = self._idle, []
        closing = [self._close_later(session) for session in idle]
        if closing:
            await asyncio.wait(closing, timeout=_CLOSE_WAIT_S)

    # --- blocking, in the plugin's threads ---------------------------------------------------

    def _connection_string(self, dialect: Dialect | None) -> str:
        pairs = odbc_string.parse(self.profile.base_connection_string())
        if dialect is not None:
            present = {k.lower() for k, _v in pairs}
            # The admin's own setting wins over Bridgehead's default for the same key.
            pairs += [(k, v) for k, v in dialect.stream_options(self.profile.fetch_size) if k.lower() not in present]
        credential = self._credential
        if credential is not None:
            if credential.username is not None:
                pairs.append(("UID", credential.username))
            if credential.password is not None:
                pairs.append(("PWD", credential.password))
        return odbc_string.build(pairs)

    def _connect(self, dialect: Dialect | None) -> Any:
        pyodbc = self._pyodbc
        timeout = max(1, round(self.profile.connect_timeout_s))
        try:
            return pyodbc.connect(self._connection_string(dialect), autocommit=True, timeout=timeout)
        except pyodbc.Error as exc:
            raise job_error(exc, doing=f"connecting to {self.name!r}") from None

    def _open(self, thread: SessionThread) -> Session:
        connection = self._connect(self._dialect)
        if self._dialect is None:
            driver = str(connection.getinfo(_SQL_DRIVER_NAME) or "")
            dialect = dialect_for(driver)
            log.info("connection %r: driver %s, dialect %s", self.name, driver or "unknown", dialect.name)
            self._dialect = dialect
            if dialect.stream_options(self.profile.fetch_size):
                connection.close()
                connection = self._connect(dialect)
        dialect = self._dialect
        if self.profile.read_only and not dialect.read_only_enforced:
            connection.close()
            raise PolicyDenied(
                f"connection {self.name!r}: read_only = true cannot be enforced on this driver ({dialect.name}); "
                "Bridgehead enforces it on PostgreSQL, MariaDB/MySQL, SQLite and Oracle. Connect with an "
                "account that can only read and set read_only = false"
            )
        session = Session(connection, dialect, thread)
        try:
            statements = dialect.session_setup + (dialect.read_only_setup if self.profile.read_only else ())
            cursor = connection.cursor()
            for statement in statements:
                cursor.execute(statement)
            cursor.close()
            connection.autocommit = False
            if not self._healthy(session):
                raise SourceError(f"connection {self.name!r}: the session did not become read-only", code="read_only")
        except self._pyodbc.Error as exc:
            _close(session)
            raise job_error(exc, doing=f"setting up a session on {self.name!r}") from None
        except BaseException:
            _close(session)
            raise
        return session

    def _healthy(self, session: Session) -> bool:
        """One round trip: the connection answers, and is still read-only if it must be."""
        query = session.dialect.read_only_check if self.profile.read_only else None
        try:
            cursor = session.connection.cursor()
            row = cursor.execute(query or session.dialect.health_check).fetchone()
            cursor.close()
            session.connection.rollback()
        except self._pyodbc.Error as exc:
            log.info("connection %r: pooled connection failed its health check (%s); replacing it", self.name, exc)
            return False
        if query is not None and not (row and _truthy(row[0])):
            log.warning("connection %r: a pooled session is no longer read-only; closing it", self.name)
            return False
        return True

    def _reset(self, session: Session) -> bool:
        if not session.reusable:
            return False
        try:
            session.connection.rollback()
        except self._pyodbc.Error:
            return False
        return True

    def _close_later(self, session: Session) -> asyncio.Future[None]:
        """Close ``session`` in its thread, which then ends."""
        closed = asyncio.get_running_loop().run_in_executor(session.thread, _close, session)
        session.thread.shutdown(wait=False)
        return closed


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "on", "true", "t", "yes")
    return bool(value)


def _close(session: Session) -> None:
    with contextlib.suppress(Exception):
        session.connection.close()
