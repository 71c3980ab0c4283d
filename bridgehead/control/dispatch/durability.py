"""Persist, then tell: the answer that promises durability runs once its write is durable.

Store writes apply in issue order (``bridgehead.control.store.base``), so the dispatcher
issues a write without awaiting it and queues the answer (an ``ack``, a ``complete_ack``, an
``offer`` whose attempt is recorded) on the write's completion: one agent's frames keep
flowing while earlier writes commit together. If a write fails, memory and store may
disagree, so the process stops (fail-stop) and a restart rebuilds everything from the
store, which is the source of truth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("bridgehead.control.dispatcher")


class Durability:
    def __init__(self, fail_stop: Callable[[BaseException], None]) -> None:
        self._fail_stop = fail_stop
        self._background: set[asyncio.Task[None]] = set()

    def after(self, write: Awaitable[Any], then: Callable[[], None] | None = None) -> asyncio.Future[Any]:
        """Run ``then`` once ``write`` is durable; the returned future resolves after it, to
        the write's own result (a fenced write on several nodes says False: ``store.nodes``)."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def on_write(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                done.cancel()
                return
            error = future.exception()
            if error is not None:
                self._fail_stop(error)
                done.set_exception(error)
                return
            try:
                if then is not None:
                    then()
            finally:
                done.set_result(future.result())

        asyncio.ensure_future(write).add_done_callback(on_write)
        return done

    async def after_value(self, write: Awaitable[T]) -> T:
        """The write's result once durable; a failed write stops the process, as in ``after``."""
        try:
            return await write
        except Exception as exc:
            self._fail_stop(exc)
            raise

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background, kept referenced until it ends; failures are logged."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_task_failure)


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed", exc_info=task.exception())
