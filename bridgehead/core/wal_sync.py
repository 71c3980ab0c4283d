"""Group commit to stable storage for an SQLite database in WAL mode: what makes an
acknowledgement survive a power loss, not only a crash of the process.

SQLite runs with ``synchronous=NORMAL``: a ``COMMIT`` writes the transaction's frames to the
``-wal`` file (the OS page cache) without waiting for the disk, so it survives a crash of the
process but not of the machine. ``WalSync`` adds the missing flush: an ``fdatasync`` of the
``-wal`` file, in a worker thread, so the event loop keeps working (and committing) while the
disk does. One sync is in flight at a time; every commit made before a sync *starts* is
covered by it, and whoever waits for durability meanwhile waits for the next one. Under load
one flush serves every commit of a loop turn or more, which is why the durable default costs
little against process-crash-only mode (bench/dispatch.py measures both).

This gives the durability of SQLite's ``synchronous=FULL`` (which fsyncs the WAL inside each
``COMMIT``, on the calling thread), without blocking the caller's thread on the disk. It is
as safe as FULL for consistency too: a power loss before a sync loses only frames written
since the last one, and SQLite's WAL recovery ignores a torn tail (checksums and salts);
checkpoints fsync the WAL and the database themselves under NORMAL.

A failed sync is not retried: after a failed ``fsync`` the kernel may have dropped the dirty
pages and marked them clean, so a retry could "succeed" without the data (PostgreSQL's
fsyncgate). Every waiter learns of the failure, and callers stop the process (fail-stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

# Windows has no fdatasync; its FlushFileBuffers (os.fsync) needs a handle open for writing.
_sync_data: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)

Resolve = Callable[[BaseException | None], None]


class WalSync:
    """The flushes of one database's WAL, made by one thread of its own.

    The thread takes every request made since its last flush, flushes once, and hands the
    outcome to the event loop in one callback; then, without waiting for the loop, it takes
    the requests that arrived meanwhile. So a commit waits for at most the flush in flight
    and its own, and the loop spends one callback per flush, not a task and a future.
    """

    def __init__(self, database: Path, sync_data: Callable[[int], None] = _sync_data) -> None:
        """``sync_data``: how a descriptor's data is flushed (tests put a slow one here)."""
        self._sync_data = sync_data
        self._wal = Path(f"{database}-wal")
        self._directory = database.parent
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._requests: list[Resolve] = []  # guarded by _lock
        self._failed: BaseException | None = None  # guarded by _lock
        self._closing = False  # guarded by _lock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def after_sync(self, resolve: Resolve) -> None:
        """Call ``resolve(None)`` on the event loop once a flush that began after this call
        has ended (so it covers every commit made before the call), or ``resolve(error)``
        if flushing failed (then every later call fails at once: a failed flush is never
        retried, see the module's docstring)."""
        with self._lock:
            failed = self._failed
            if failed is None:
                self._requests.append(resolve)
                if self._thread is None:
                    self._loop = asyncio.get_running_loop()
                    self._thread = threading.Thread(target=self._run, name="wal-sync", daemon=True)
                    self._thread.start()
                self._work.notify()
        if failed is not None:
            resolve(failed)

    def flushed(self) -> asyncio.Future[None]:
        """A future that resolves once every commit made before the call is on stable
        storage, or fails with the flush's error."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def resolve(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        self.after_sync(resolve)
        return done

    async def aclose(self) -> None:
        """``close``, from the event loop (it blocks for at most the flushes still asked for)."""
        self.close()

    def close(self) -> None:
        """Stop the thread once it has flushed for every request made so far (their answers
        reach the event loop afterwards, if it still runs), and release the file."""
        with self._lock:
            self._closing = True
            self._work.notify()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _run(self) -> None:
        """The thread: flush for whoever asked, hand the outcome over, again."""
        while True:
            with self._lock:
                while not self._requests and not self._closing:
                    self._work.wait()
                if not self._requests:
                    return
                batch, self._requests = self._requests, []
            error: BaseException | None = None
            try:
                self._sync_once()
            except Exception as exc:  # noqa: BLE001 - every waiter of the flush learns of it
                error = exc
                with self._lock:
                    self._failed = exc
                    batch, self._requests = batch + self._requests, []
            self._answer(batch, error)
            if error is not None:
                return

    def _answer(self, batch: list[Resolve], error: BaseException | None) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve_all, batch, error)

    def _sync_once(self) -> None:
        """In the thread: flush the WAL file's data (and, the first time, the directory entry
        that names it, since a file created since the last directory sync can vanish with a
        power loss however well its data was flushed)."""
        if self._fd is None:
            self._fd = os.open(self._wal, os.O_RDWR)  # never written through: see _sync_data
            _sync_directory(self._directory)
        self._sync_data(self._fd)


def _resolve_all(batch: list[Resolve], error: BaseException | None) -> None:
    for resolve in batch:
        resolve(error)


def _sync_directory(directory: Path) -> None:
    if os.name == "nt":  # NTFS journals directory entries; Windows cannot open a directory here
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
            os.fsync(fd)
    finally:
        os.close(fd)
