"""``Fetcher``: a source read in worker threads, a few batches ahead of the event loop.

For plugins that pull batches from a blocking client (``sql``: ``cursor.fetchmany``;
``ldap``: one page of a paged search). A fetch per ``run_in_executor`` call stalls at every
hand-over: the thread ends, the loop must wake, take the GIL and start the next call, and
meanwhile the source waits. Measured on ``sql``, that left the fetch thread idle a third of
the time; on ``ldap``, 500-entry pages cost 20% of the throughput. Here two threads run for
the whole job: one fetches, the other encodes the batch before, so the two overlap. Batches
reach the event loop through a queue, at most ``depth`` ahead of it: that is how
backpressure from the agent's stream reaches the source. A full stream stops the loop
reading, the threads stop fetching, and the server-side cursor or search waits.

``encode`` returns a batch's records one by one (``list[bytes]``), or, cheaper for many small
records, encoded together as one ``RecordArray`` (``sql`` does: see bridgehead/sdk/records.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from bridgehead.core.errors import JobError
from bridgehead.sdk.records import RecordArray

if TYPE_CHECKING:
    from bridgehead.sdk.plugin import JobContext

_STOP_POLL_S = 0.1
_PROGRESS_EVERY_S = 1.0
# How long a stopped job waits for its threads once the call in flight was stopped at the source.
_STOP_GRACE_S = 10.0


class Fetcher:
    """A blocking source read by two threads (fetch, encode) a few batches ahead of the loop;
    ``stream`` runs them and hands every batch to the job's context."""

    def __init__(
        self,
        fetch: Callable[[int], list[Any]],
        encode: Callable[[list[Any]], list[bytes] | RecordArray],
        *,
        fetch_size: int,
        max_rows: int | None,
        depth: int = 4,
    ) -> None:
        self._fetch = fetch
        self._encode = encode
        self._fetch_size = fetch_size
        self._max_rows = max_rows
        self._queue: asyncio.Queue[list[bytes] | RecordArray | BaseException | None] = asyncio.Queue()
        self._room = threading.Semaphore(depth)
        # Fetched rows on their way to the encoding thread (bounded by ``_room`` too).
        self._rows: queue.SimpleQueue[list[Any] | BaseException | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._loop = asyncio.get_running_loop()
        self.rows = 0
        # Set by the thread while it is inside a database call: when that call started.
        self.call_started: float | None = None
        # Rows were left unread because max_rows was reached.
        self.truncated = False

    # --- the worker threads --------------------------------------------------------------

    def run_fetch(self) -> None:
        """Thread one: fetch batches of rows, up to ``depth`` ahead of the event loop."""
        try:
            while True:
                while not self._room.acquire(timeout=_STOP_POLL_S):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                size = self._fetch_size
                if self._max_rows is not None:
                    size = min(size, self._max_rows - self.rows)
                    if size <= 0:
                        self.truncated = True
                        self._rows.put(None)
                        return
                self.call_started = time.monotonic()
                try:
                    rows = self._fetch(size)
                finally:
                    self.call_started = None
                if not rows:
                    self._rows.put(None)
                    return
                self.rows += len(rows)
                self._rows.put(rows)
        except BaseException as exc:  # noqa: BLE001 - handed on, and raised in the event loop
            self._rows.put(exc)

    def run_encode(self) -> None:
        """Thread two: encode each batch while thread one waits on the driver for the next."""
        while True:
            try:
                item = self._rows.get(timeout=_STOP_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is None or isinstance(item, BaseException):
                self._deliver(item)
                return
            try:
                encoded = self._encode(item)
            except BaseException as exc:  # noqa: BLE001 - raised in the event loop
                self._stop.set()
                self._deliver(exc, even_if_stopped=True)
                return
            self._deliver(encoded)

    def _deliver(self, item: list[bytes] | RecordArray | BaseException | None, even_if_stopped: bool = False) -> None:
        if even_if_stopped or not self._stop.is_set():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    # --- the event loop ------------------------------------------------------------------

    async def next_batch(self, call_timeout_s: float) -> list[bytes] | RecordArray | None:
        """The next batch of encoded records; ``None`` at the end. Raises ``TimeoutError`` if
        one database call has run ``call_timeout_s``, and whatever the fetch raised."""
        while True:
            started = self.call_started
            wait = call_timeout_s if started is None else call_timeout_s - (time.monotonic() - started)
            try:
                async with asyncio.timeout(max(0.01, wait)):
                    item = await self._queue.get()
            except TimeoutError:
                started = self.call_started
                if started is not None and time.monotonic() - started >= call_timeout_s:
                    raise
                continue
            self._room.release()
            if isinstance(item, BaseException):
                raise item
            return item

    def stop(self) -> None:
        """Ask the thread to end after its current call (the caller cancels that call)."""
        self._stop.set()

    async def stream(
        self,
        ctx: JobContext[Any],
        *,
        fetch_executor: Executor,
        encode_executor: Executor,
        call_timeout_s: float,
        on_timeout: Callable[[], JobError],
        on_abort: Callable[[], None],
        unit: str,
        translate: Callable[[BaseException], BaseException] | None = None,
    ) -> None:
        """Run both threads and hand every batch to ``ctx`` until the source is exhausted (or
        ``max_rows`` reached: see ``truncated``), with progress every second.

        A fetch that runs past ``call_timeout_s`` raises ``on_timeout()``; anything the threads
        raise goes through ``translate``. If the job is cancelled, times out or fails part-way,
        the threads are told to stop and ``on_abort`` stops the call in flight at the source
        (SQLCancel, shutting a socket), then the threads get a grace period to return.
        """
        loop = asyncio.get_running_loop()
        threads = asyncio.gather(
            loop.run_in_executor(fetch_executor, self.run_fetch),
            loop.run_in_executor(encode_executor, self.run_encode),
        )
        last_progress = time.monotonic()
        finished = False
        try:
            while True:
                try:
                    batch = await self.next_batch(call_timeout_s)
                except TimeoutError:
                    raise on_timeout() from None
                except JobError:
                    raise
                except Exception as exc:
                    if translate is None:
                        raise
                    raise translate(exc) from None
                if batch is None:
                    break
                if isinstance(batch, RecordArray):
                    await ctx.emit_array(batch)
                else:
                    await ctx.emit_encoded(batch)
                now = time.monotonic()
                if now - last_progress >= _PROGRESS_EVERY_S:
                    last_progress = now
                    ctx.progress(ctx.records_emitted, None, f"{ctx.records_emitted:,} {unit}")
            finished = True
        finally:
            if not finished:
                self.stop()
                on_abort()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(threads), _STOP_GRACE_S)
