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

Signals: a write may carry a *signal* (``_write(op, signal="q:cluster")``), a short token that
every other node hears once the commit holding the write is durable: the commit's ``NOTIFY``
carries the tokens of its writes. That is how one node wakes another (a job queued, a job
ended, a cancel, an agent that moved); see ``on_signal``. Tokens travel base64-encoded, so a
cluster name or job id never reaches the SQL text. Any other write changes something other
processes may hold in memory (a token, a revocation, a schedule): its commit carries ``x``,
which ``external_changes`` counts, unless the write is ``quiet`` (the hot path's records,
claims, heartbeats, audit lines: other nodes keep nothing of them in memory). A commit of
quiet writes alone notifies nobody, so a busy node does not make the others re-read.

Connections are opened on first use, on the caller's event loop (the store is built
synchronously, where the control plane's parts are); the migrations ran before, in
``PostgresStore.__init__``. A lost connection fails the writes in flight and every write
after it: the dispatcher then fail-stops, and on PostgreSQL the node waits for the database
and starts again (``control.recovery``), rebuilding its state from the store.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")
Op = Callable[[asyncpg.Connection], Awaitable[Any]]
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")
READ_CONNECTIONS = 4  # reads in flight at once; more wait for a free connection
# A statement unanswered this long means the database is out of reach (a partition hangs a
# connection rather than refusing it): the write fails, and the node fail-stops and recovers
# (control.recovery) instead of waiting for TCP to give up, hours later.
STATEMENT_TIMEOUT_S = 30.0
# A NOTIFY payload holds under 8,000 bytes; a commit with more signals sends several.
_CHANGED = "x"  # the signal of a commit that changed what other processes may cache
_NOTIFY_BYTES = 5000
Listener = Callable[[list[str]], None]

log = logging.getLogger("bridgehead.control.store")


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
        self._pending: list[tuple[Op, asyncio.Future[Any], str | None]] = []  # signal, "" if quiet
        self._listeners: list[Listener] = []
        self._committing: asyncio.Task[None] | None = None
        self._opening: asyncio.Task[None] | None = None
        self._writer: asyncpg.Connection | None = None
        self._listener: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._closed = False

    def _settings(self) -> dict[str, str]:
        return {"search_path": self._schema, "synchronous_commit": "on", "application_name": "bridgehead-control"}

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(
            self._url, password=self._password, server_settings=self._settings(), command_timeout=STATEMENT_TIMEOUT_S
        )

    async def _open(self) -> None:
        self._writer = await self._connect()
        self._listener = await self._connect()
        await self._listener.add_listener(self._channel, self._notified)
        self._pool = await asyncpg.create_pool(
            self._url,
            password=self._password,
            server_settings=self._settings(),
            min_size=1,
            max_size=READ_CONNECTIONS,
            command_timeout=STATEMENT_TIMEOUT_S,
        )

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        sender, _, encoded = str(payload).partition(":")
        if sender == self._me:
            return
        try:
            signals = base64.b64decode(encoded).decode().split("\n") if encoded else [_CHANGED]
        except ValueError:
            log.warning("ignored a malformed notification on %s", self._channel)
            return
        if _CHANGED in signals:
            self._changes += 1
        if not self._listeners:
            return
        for listener in self._listeners:
            try:
                listener(signals)
            except Exception:  # noqa: BLE001 - one listener's bug must not silence the others
                log.exception("a signal listener failed")

    def on_signal(self, listener: Listener) -> None:
        """Call ``listener(tokens)`` with the signals of each other node's commit (in commit
        order, on the event loop). Missed ones (a lost listening connection) are not replayed:
        listeners also poll, slowly, for what a signal would have told them."""
        self._listeners.append(listener)

    async def listening(self) -> None:
        """Return once this store hears other nodes' signals (its connections are open)."""
        await self._ready()

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

    def _write(
        self, op: Callable[[asyncpg.Connection], Awaitable[T]], signal: str | None = None, quiet: bool = False
    ) -> asyncio.Future[T]:
        """Queue ``op`` (it runs on the write connection, inside the transaction) for the next
        commit; the future resolves once that commit is durable. ``signal``: a token the
        other nodes hear once it is; ``quiet``: nothing other nodes keep in memory changes
        (see the module's docstring)."""
        if self._closed:
            raise RuntimeError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((op, future, "" if quiet and signal is None else signal))
        if self._committing is None or self._committing.done():
            self._committing = loop.create_task(self._commit_loop())
        return future

    async def _commit_loop(self) -> None:
        try:
            await self._ready()
        except BaseException as exc:  # noqa: BLE001 - every caller waiting learns of it
            batch, self._pending = self._pending, []
            for _op, future, _signal in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        assert self._writer is not None  # noqa: S101 - set by _open
        while self._pending:
            batch, self._pending = self._pending, []
            await self._commit(self._writer, batch)

    async def _commit(self, conn: asyncpg.Connection, batch: list[tuple[Op, asyncio.Future[Any], str | None]]) -> None:
        results: list[Any] = []
        try:
            await conn.execute("BEGIN")
            for op, _future, _signal in batch:
                results.append(await op(conn))
            # One round trip for all; the id and channel are ours (hex, checked schema name)
            # and the signals base64 (see the module's docstring).
            notify = "".join(f"NOTIFY {self._channel}, '{payload}'; " for payload in self._payloads(batch))
            await conn.execute(f"{notify}COMMIT")
        except BaseException as exc:
            if not conn.is_closed() and conn.is_in_transaction():
                try:
                    await conn.execute("ROLLBACK")
                except Exception:  # noqa: BLE001, S110 - the connection is gone; the writes failed anyway
                    pass
            for _op, future, _signal in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_op, future, _signal), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _payloads(self, batch: list[tuple[Op, asyncio.Future[Any], str | None]]) -> list[str]:
        """NOTIFY payloads for a commit: ``ME:BASE64`` of its newline-joined signals (and ``x``
        if a write that is neither quiet nor signalled changed something), as many as the size
        limit needs; none for a commit of quiet writes."""
        tokens = [signal for _op, _future, signal in batch if signal]
        if any(signal is None for _op, _future, signal in batch):
            tokens.append(_CHANGED)
        payloads: list[str] = []
        chunk: list[str] = []
        size = 0
        for token in dict.fromkeys(tokens):  # each token once per commit, in order
            if chunk and size + len(token) > _NOTIFY_BYTES:
                payloads.append(self._payload(chunk))
                chunk, size = [], 0
            chunk.append(token)
            size += len(token) + 1
        if chunk:
            payloads.append(self._payload(chunk))
        return payloads

    def _payload(self, tokens: list[str]) -> str:
        return f"{self._me}:{base64.b64encode(chr(10).join(tokens).encode()).decode()}"
