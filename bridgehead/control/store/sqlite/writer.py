"""The SQLite store's group-commit engine: the writes issued during one turn of the event loop
commit together.

Calls run on the event loop thread rather than in a worker thread: each statement here takes
microseconds, less than a thread hop costs, and one connection used from one thread needs no
locking. Large record batches are the exception worth watching (bench/ measures them).

Every write issued during one turn of the event loop joins one transaction, committed at the
end of that turn, and each caller's ``await`` returns only after the commit. Under load one
commit serves many jobs; alone, a write waits for no one. Writes that may fail on a
constraint run under a savepoint, so their failure does not undo the others.

This is how the SQLite store keeps the contract's write promise (``store.base``): issued in
call order, applied in that order, resolved once durable. "Durable" is the configured kind
(``store.synchronous``): by default (``full``) a commit's callers resume only after a flush of
the WAL that covers it (``bridgehead.core.wal_sync``: off the loop, one flush for every
commit made meanwhile), so every acknowledgement built on a write survives a power loss;
``normal`` resolves at the commit itself (survives a crash of the process only).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from bridgehead.core.wal_sync import WalSync

T = TypeVar("T")
log = logging.getLogger("bridgehead.control.store")
Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]


class GroupCommit:
    """Owns the connection; the table classes of this package queue their writes here."""

    def __init__(self, db: sqlite3.Connection, wal_sync: WalSync | None = None) -> None:
        """``wal_sync``: flush the WAL before resolving a commit's writes (power-loss safe);
        ``None`` resolves them at the commit (process-crash safe only)."""
        self.db = db
        self._wal_sync = wal_sync
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any], bool]] = []
        self._on_commit: list[Callable[[], None]] = []  # run right after the next commit
        self._flush_scheduled = False

    @property
    def commits_before_durable(self) -> bool:
        return self._wal_sync is not None

    def when_committed(self, callback: Callable[[], None]) -> None:
        """``callback`` right after this turn's commit, before its flush (``store.base``)."""
        if self._wal_sync is None:
            raise NotImplementedError("synchronous = normal: a commit is all there is")
        self._on_commit.append(callback)
        self._schedule_flush()

    async def close(self) -> None:
        if self._pending:
            self._flush()
        if self._wal_sync is not None:
            await self._wal_sync.aclose()
        self.db.close()

    def _write(self, op: Callable[[], T], isolated: bool = False) -> asyncio.Future[T]:
        """Queue ``op`` for this turn's transaction; the future resolves after the commit.

        ``isolated`` ops run under a savepoint, so their expected failure (a constraint) is
        theirs alone; any other failing op fails the whole batch, which the dispatcher
        treats as fatal.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((op, future, isolated))
        self._schedule_flush()
        return future

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = self._pending, []
        committed, self._on_commit = self._on_commit, []
        if not batch:
            _run_all(committed)  # what they wait for was committed by an earlier turn
            return
        outcomes: list[Outcome] = []
        try:
            # IMMEDIATE takes the write lock up front, so a CLI writing tokens meanwhile waits
            # (busy_timeout) instead of failing the upgrade from a read lock.
            self.db.execute("BEGIN IMMEDIATE")
            for op, future, isolated in batch:
                if not isolated:
                    outcomes.append((future, op(), None))
                    continue
                self.db.execute("SAVEPOINT op")
                try:
                    result = op()
                except sqlite3.IntegrityError as exc:
                    self.db.execute("ROLLBACK TO op")
                    outcomes.append((future, None, exc))
                else:
                    outcomes.append((future, result, None))
                self.db.execute("RELEASE op")
            self.db.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - every caller of the batch learns of it
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            _resolve([(future, None, exc) for _op, future, _isolated in batch])
            return
        if self._wal_sync is None:
            _resolve(outcomes)
        else:
            self._wal_sync.after_sync(lambda error: _resolve(outcomes, error))
            _run_all(committed)


def _run_all(callbacks: list[Callable[[], None]]) -> None:
    """Commit callbacks, each on its own: one that fails is logged and spoils no other."""
    for callback in callbacks:
        try:
            callback()
        except Exception:  # noqa: BLE001 - a caller's bug; the commit stands
            log.exception("a callback after a commit failed")


def _resolve(outcomes: list[Outcome], sync_error: BaseException | None = None) -> None:
    """Settle each write of a batch: its result or its own error, or the flush's error (then
    nothing of the batch may be taken as durable)."""
    for future, result, error in outcomes:
        if future.done():
            continue
        error = sync_error or error
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
