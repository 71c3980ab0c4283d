"""Blocking calls (a driver's connect, a DNS lookup) in threads that can never hold the
command up: each call gets a daemon thread of its own.

A check that times out stops waiting; its thread may stay blocked in the driver (a server
behind a firewall that drops packets) until the process exits, which it then does at once.
asyncio's default executor would not do: its threads are joined at exit, so one stuck
``connect`` would hang ``doctor`` for as long as the driver's own timeout, or for ever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class DaemonThreads(concurrent.futures.Executor):
    """An executor that runs each call in a new daemon thread."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=work, name=f"doctor-{getattr(fn, '__name__', 'call')}", daemon=True).start()
        return future


DAEMON_THREADS = DaemonThreads()


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a daemon thread; a cancel stops the waiting, not the thread."""
    return await asyncio.wrap_future(DAEMON_THREADS.submit(fn, *args))
