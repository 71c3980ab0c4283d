"""``SqlPlugin``: runs one query on a pooled connection and streams its rows as records.

The flow of a job::

    acquire a healthy pooled session (waits for a free slot, at most the job's time)
    execute the query with its parameters bound by the driver   (the session's own thread)
    fetch fetch_size rows                                        (the session's own thread)
      and encode them to records                                 (an encoding thread)
      while the event loop hands the previous batch to the agent's stream; the stream blocks
      when its window and spool are full, and with it the next fetch: backpressure reaches
      the database cursor, so memory stays bounded however many rows there are
    roll back and return the session to the pool

On a ``read_only`` profile the text is first checked to be one statement that only reads
(statements.py), before it reaches the driver, and nothing is ever committed.

Each blocking call is bounded by ``query_timeout_s`` and the job's own timeout. On either,
or on a cancel, ``cursor.cancel()`` (SQLCancel) asks the server to stop the statement, and
the connection is closed rather than pooled, so the server's session ends too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

from bridgehead.plugins.sql.failures import connection_lost, job_error, sqlstate_and_text
from bridgehead.plugins.sql.odbc_describe import column_type_names
from bridgehead.plugins.sql.params import SqlParams, SqlProfile
from bridgehead.plugins.sql.pool import Pool, Session
from bridgehead.plugins.sql.rows import Column, RowEncoder
from bridgehead.sdk import Credential, Fetcher, InvalidParams, JobContext, JobError, Plugin, SourceError

T = TypeVar("T")

# How long a cancelled statement may take to return once SQLCancel was sent.
_CANCEL_GRACE_S = 10.0
# Encoding threads, shared by all pools: one per job that is streaming rows. (Calls into the
# driver run in each connection's own thread: see session_thread.py.)
_MAX_THREADS = 64


def _import_pyodbc() -> Any:
    # Imported on first use: the agent must start (and its other plugins run) on a host
    # without unixODBC, and importing pyodbc there fails.
    try:
        import pyodbc  # noqa: PLC0415
    except ImportError as exc:
        raise SourceError(
            f"the sql plugin needs pyodbc and unixODBC (libodbc.so.2): {exc}", code="odbc_driver_missing"
        ) from None
    pyodbc.native_uuid = True  # uuid columns as UUID (encoded lowercase), not uppercase strings
    return pyodbc


class SqlPlugin(Plugin[SqlParams, SqlProfile]):
    name = "sql"
    version = "1"
    params_type = SqlParams
    profile_type = SqlProfile
    safe_to_repeat = False  # refined by the profile: see is_safe_to_repeat_on

    def __init__(self) -> None:
        self._pools: dict[tuple[str, Credential | None], Pool] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(_MAX_THREADS, thread_name_prefix="sql")
        self._pyodbc: Any = None

    def is_safe_to_repeat_on(self, profile: SqlProfile, params: SqlParams) -> bool:
        # Nothing a job does on a read-only session changes the database: running it again
        # after a lost attempt gives the same answer. On a read-write one it may write twice.
        return profile.read_only

    def _pool(self, name: str, profile: SqlProfile, credential: Credential | None) -> Pool:
        key = (name, credential)
        pool = self._pools.get(key)
        if pool is None:
            if self._pyodbc is None:
                self._pyodbc = _import_pyodbc()
            # A rotated credential starts a new pool; the old one's idle connections go.
            for old_key in [k for k in self._pools if k[0] == name]:
                old = self._pools.pop(old_key)
                asyncio.get_running_loop().create_task(old.aclose())
            pool = self._pools[key] = Pool(name, profile, credential, self._pyodbc)
        return pool

    async def run(self, ctx: JobContext[SqlProfile], params: SqlParams) -> None:
        profile = ctx.profile
        pool = self._pool(params.connection, profile, ctx.credential)
        session = await pool.acquire(ctx.remaining_s)
        try:
            if profile.read_only:
                # Imported on first use, as the drivers are: an idle agent's memory is budgeted.
                from bridgehead.plugins.sql.statements import check_read_only  # noqa: PLC0415

                # The server's syntax is known once a connection told the driver's name.
                check_read_only(params.query, session.dialect.syntax)
        except BaseException:
            pool.release(session)
            raise
        try:
            await _Query(ctx, params, session, self._executor, self._pyodbc).run()
        except BaseException:
            session.reusable = False
            raise
        finally:
            pool.release(session)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()
        # Connections still closing in the threads finish before the threads go.
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)


class _Query:
    """One job's statement on one session."""

    def __init__(
        self,
        ctx: JobContext[SqlProfile],
        params: SqlParams,
        session: Session,
        executor: concurrent.futures.Executor,
        pyodbc: Any,
    ) -> None:
        self.ctx = ctx
        self.params = params
        self.session = session
        self.executor = executor
        self.pyodbc = pyodbc
        self.cursor: Any = None
        self.columns: list[str] | None = None
        limits = [n for n in (params.max_rows, ctx.profile.max_rows) if n is not None]
        self.max_rows = min(limits) if limits else None

    async def run(self) -> None:
        ctx, profile = self.ctx, self.ctx.profile
        self.cursor = await self._call(self.session.connection.cursor, doing="opening a cursor")
        try:
            await self._call(self._execute, doing="running the query")
            if self.cursor.description is None:
                # A statement without a result set. A read-only job is never committed: the
                # pool rolls its transaction back (statements.py lets few such statements by).
                rowcount = self.cursor.rowcount
                await ctx.emit({"rows_affected": rowcount if rowcount >= 0 else None})
                if not profile.read_only:
                    await self._call(self.session.connection.commit, doing="committing")
                return
            encoder = RowEncoder(await self._call(self._describe, doing="describing the result"))
            await self._stream(encoder, profile.fetch_size)
            if not profile.read_only:
                # INSERT ... RETURNING and the like: their rows were sent, so their change stays.
                await self._call(self.session.connection.commit, doing="committing")
        finally:
            # In the session's thread, ahead of the pool's rollback; not awaited: a cursor
            # whose statement was cancelled may take a while, and the job is over.
            cursor, self.cursor = self.cursor, None
            with contextlib.suppress(RuntimeError):
                self.session.thread.submit(cursor.close)

    def _execute(self) -> None:
        dialect = self.session.dialect
        for statement in dialect.read_only_begin if self.ctx.profile.read_only else ():
            self.cursor.execute(statement)
        try:
            self.cursor.execute(self.params.query, *self.params.parameters)
        except self.pyodbc.Error as exc:
            if not dialect.needs_uncursored_retry(*sqlstate_and_text(exc)):
                raise
            # Refused by the streaming cursor before it ran (see dialects.py): nothing was
            # done, but the transaction is aborted. Start it again and run the statement as is.
            self.ctx.log.info("the statement cannot run in a server-side cursor; running it buffered")
            self.session.connection.rollback()
            for statement in dialect.read_only_begin if self.ctx.profile.read_only else ():
                self.cursor.execute(statement)
            self.cursor.execute(dialect.uncursored_prefix + self.params.query, *self.params.parameters)

    def _describe(self) -> list[Column]:
        description = self.cursor.description
        names = column_type_names(self.cursor) or [""] * len(description)
        utc_types = self.session.dialect.utc_type_names
        self.columns = [d[0] for d in description]
        return [
            Column(name=d[0], python_type=d[1], type_name=t, utc=t.lower() in utc_types)
            for d, t in zip(description, names, strict=True)
        ]

    async def _stream(self, encoder: RowEncoder, fetch_size: int) -> None:
        ctx = self.ctx
        timeout_s = ctx.profile.query_timeout_s
        fetcher = Fetcher(self.cursor.fetchmany, encoder.encode_array, fetch_size=fetch_size, max_rows=self.max_rows)

        def abort() -> None:  # cancelled, timed out or failed part-way: stop the call in flight
            self.session.reusable = False
            self._cancel_statement()

        def translate(exc: BaseException) -> BaseException:
            if isinstance(exc, self.pyodbc.Error):
                return job_error(exc, doing="fetching rows", columns=self.columns)
            return exc

        await fetcher.stream(
            ctx,
            fetch_executor=self.session.thread,
            encode_executor=self.executor,
            call_timeout_s=timeout_s,
            on_timeout=lambda: SourceError(
                f"fetching rows: a fetch ran past query_timeout_s = {timeout_s:g} s and was cancelled",
                code="query_timeout",
            ),
            on_abort=abort,
            unit="rows",
            translate=translate,
        )
        total = ctx.records_emitted
        if fetcher.truncated:
            # Rows are left unread: the server is told to stop, and a MySQL connection, which
            # would otherwise have to read them all first, is not pooled.
            ctx.progress(total, None, f"stopped at max_rows = {self.max_rows:,}")
            ctx.log.info("stopped at max_rows = %d", self.max_rows)
            if not self.session.dialect.reuse_after_partial_read:
                self.session.reusable = False
                self._cancel_statement()
        else:
            ctx.progress(total, total, f"{total:,} rows")

    def _start(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        started = time.monotonic()
        future = asyncio.get_running_loop().run_in_executor(self.session.thread, fn, *args)
        future.started = started  # type: ignore[attr-defined]
        return future

    async def _call(self, fn: Callable[..., T], *args: Any, doing: str) -> T:
        return await self._wait(self._start(fn, *args), doing=doing)

    async def _wait(self, future: asyncio.Future[T], *, doing: str) -> T:
        """Await a blocking call, bounded by query_timeout_s from when it started; on timeout
        or cancel, send SQLCancel and give the call a grace period to return."""
        profile = self.ctx.profile
        limit = profile.query_timeout_s - (time.monotonic() - future.started)  # type: ignore[attr-defined]
        try:
            async with asyncio.timeout(max(0.0, limit)):
                return await asyncio.shield(future)
        except TimeoutError:
            self.session.reusable = False
            self._cancel_statement()
            await self._drain(future)
            raise SourceError(
                f"{doing}: the statement ran past query_timeout_s = {profile.query_timeout_s:g} s and was cancelled",
                code="query_timeout",
            ) from None
        except asyncio.CancelledError:
            self.session.reusable = False
            self._cancel_statement()
            await self._drain(future)
            raise
        except OverflowError as exc:  # pyodbc: a parameter too large for any SQL type
            raise InvalidParams(f"{doing}: a parameter is out of range: {exc}") from None
        except self.pyodbc.Error as exc:
            if connection_lost(exc):
                self.session.reusable = False
            raise job_error(exc, doing=doing, columns=self.columns) from None
        except JobError:
            raise

    async def _drain(self, future: asyncio.Future[Any]) -> None:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(future), _CANCEL_GRACE_S)

    def _cancel_statement(self) -> None:
        cursor = self.cursor
        if cursor is None:
            return
        try:
            cursor.cancel()  # SQLCancel: thread-safe by the ODBC spec, for a call in another thread
        except Exception as exc:  # noqa: BLE001 - the connection is closed next in any case
            self.ctx.log.info("SQLCancel failed: %s", exc)
