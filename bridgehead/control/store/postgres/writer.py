"""The PostgreSQL store's connections and group-commit engine, the design of the SQLite writer
(``store.sqlite.writer``) over a network: one connection dedicated to writes, a small pool for
reads, and one connection that listens for other processes' commits.

Every write issued while no commit is in flight joins one transaction, started on the next
turn of the event loop; writes issued while a commit is in flight wait for it and join the
next one. So writes are applied in the order issued (one connection, one transaction at a
time), each caller's ``await`` returns only after the ``COMMIT`` that holds its write, with
``synchronous_commit=on`` (flushed to the server's WAL: survives a power loss of the database
host), and under load one commit serves many writes. A write that fails aborts its
transaction: every write of that commit fails with it, which the dispatcher treats as fatal
(the writes whose failure is expected use ``ON CONFLICT`` and never raise).

Reads go to the pool: each sees every write acknowledged before it (a committed write is
visible to every later transaction, under PostgreSQL's default READ COMMITTED).

Connections are opened on first use, on the caller's event loop (the store is built
synchronously, where the control plane's parts are); the migrations ran before, in
``PostgresStore.__init__``. A lost connection fails the writes in flight and every write
after it: reconnecting without losing or doubling a write is for the multi-node part.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")
Op = Callable[[asyncpg.Connection], Awaitable[Any]]
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")
READ_CONNECTIONS = 4  # reads in flight at once; more wait for a free connection


class GroupCommit:
    """Owns the connections; the table classes of this package queue their writes here."""

    def __init__(self, url: str, password: str | None, schema: str) -> None:
        if not SCHEMA_NAME.match(schema):
            raise ValueError(f"schema {schema!r}: lowercase letters, digits and '_'")
        self._url = url
        self._password = password
        self._schema = schema
        # Other processes' commits arrive on this channel; our own carry our id, and are not
        # counted (external_changes).
        self._channel = f"bridgehead_{schema}"
        self._me = secrets.token_hex(8)
        self._changes = 0
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self._committing: asyncio.Task[None] | None = None
        self._opening: asyncio.Task[None] | None = None
        self._writer: asyncpg.Connection | None = None
        self._listener: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._closed = False

    def _settings(self) -> dict[str, str]:
        return {"search_path": self._schema, "synchronous_commit": "on", "application_name": "bridgehead-control"}

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self._url, password=self._password, server_settings=self._settings())

    async def _open(self) -> None:
        self._writer = await self._connect()
        self._listener = await self._connect()
        await self._listener.add_listener(self._channel, self._notified)
        self._pool = await asyncpg.create_pool(
            self._url, password=self._password, server_settings=self._settings(), min_size=1, max_size=READ_CONNECTIONS
        )

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if payload != self._me:
            self._changes += 1

    async def _ready(self) -> None:
        if self._closed:
            raise RuntimeError("the store is closed")
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        await asyncio.shield(self._opening)

    async def _reads(self) -> asyncpg.Pool:
        await self._ready()
        assert self._pool is not None  # noqa: S101 - set by _open
        return self._pool

    def external_changes(self) -> int:
        return self._changes

    async def close(self) -> None:
        if self._committing is not None:
            await asyncio.gather(self._committing, return_exceptions=True)
        self._closed = True
        if self._opening is not None:
            await asyncio.gather(self._opening, return_exceptions=True)
        for conn in (self._writer, self._listener):
            if conn is not None:
                await conn.close()
        if self._pool is not None:
            await self._pool.close()

    def _write(self, op: Callable[[asyncpg.Connection], Awaitable[T]]) -> asyncio.Future[T]:
        """Queue ``op`` (it runs on the write connection, inside the transaction) for the next
        commit; the future resolves once that commit is durable."""
        if self._closed:
            raise RuntimeError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((op, future))
        if self._committing is None or self._committing.done():
            self._committing = loop.create_task(self._commit_loop())
        return future

    async def _commit_loop(self) -> None:
        try:
            await self._ready()
        except BaseException as exc:  # noqa: BLE001 - every caller waiting learns of it
            batch, self._pending = self._pending, []
            for _op, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        assert self._writer is not None  # noqa: S101 - set by _open
        while self._pending:
            batch, self._pending = self._pending, []
            await self._commit(self._writer, batch)

    async def _commit(self, conn: asyncpg.Connection, batch: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        results: list[Any] = []
        try:
            await conn.execute("BEGIN")
            for op, _future in batch:
                results.append(await op(conn))
            # One round trip for both; the id and channel are ours (hex, checked schema name).
            await conn.execute(f"NOTIFY {self._channel}, '{self._me}'; COMMIT")
        except BaseException as exc:
            if not conn.is_closed() and conn.is_in_transaction():
                try:
                    await conn.execute("ROLLBACK")
                except Exception:  # noqa: BLE001, S110 - the connection is gone; the writes failed anyway
                    pass
            for _op, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_op, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
