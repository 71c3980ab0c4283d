"""``SessionThread``: the one thread that makes every call on one ODBC connection.

ODBC lets any thread use a connection, but drivers do not all keep that promise. MariaDB
Connector/ODBC 3.1 takes a per-connection lock that its error path for a multi-statement
text never releases: the thread that ran the statement can still use the connection (the
lock is recursive), any other thread that touches it blocks for ever. A connection that
only ever sees one thread cannot fall into that, or into any bug of its kind, so each pooled
connection gets its own thread, from its connect to its close. The only call made from
elsewhere is ``SQLCancel``, which exists to be called from another thread.

The thread is a daemon: a driver call that never returns (a dead server behind a firewall
that drops packets, a driver bug) costs one parked thread, never the agent's exit.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Work = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]


class SessionThread(concurrent.futures.Executor):
    """An executor with exactly one daemon thread, running calls in the order submitted."""

    def __init__(self, name: str) -> None:
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._shut = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        if kwargs:
            raise TypeError("SessionThread.submit takes positional arguments only")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("the session's thread has been shut down")
            self._work.put((future, fn, args))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """End the thread after the calls already submitted (``cancel_futures`` drops those
        not yet started). ``wait`` blocks until the thread has ended."""
        with self._lock:
            if not self._shut:
                self._shut = True
                if cancel_futures:
                    while True:
                        try:
                            item = self._work.get_nowait()
                        except queue.Empty:
                            break
                        if item is not None:
                            item[0].cancel()
                self._work.put(None)
        if wait:
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(exc)
            else:
                future.set_result(result)
            del future, fn, args, item  # drop references (a cursor, rows) while parked in get()
