"""The outbound record stream of one job attempt: memory window, then disk spool, then block.

Records are numbered from 1 (``seq``). Those not yet acknowledged by the control plane sit
in memory, up to ``window_records`` / ``window_bytes`` per attempt; beyond that they go to
the journal's spool, up to ``spool_max_bytes`` across the agent; beyond *that*, ``put``
blocks, and with it the plugin, until acknowledgements free room. Nothing is deleted to make
room (the MID Server's spool deletes results when full).

Layout of an attempt's unacknowledged records at any moment::

    acked < seq <= mem_hi        in memory (maybe also in the spool)
    mem_hi < seq < next_seq      only in the spool; read back as the window frees up
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence

from agent.journal import Journal
from agent.protocol import Complete, ErrorInfo, SyncState
from agent.protocol.messages import JobStatus

log = logging.getLogger("bridgehead.agent.stream")


class SpoolBudget:
    """The agent-wide cap on spooled bytes, and the wake-up for writers blocked on room."""

    def __init__(self, max_bytes: int, used: int = 0) -> None:
        self.max_bytes = max_bytes
        self.used = used
        self._changed = asyncio.Event()

    def try_reserve(self, n: int) -> bool:
        if self.used + n > self.max_bytes:
            return False
        self.used += n
        return True

    def force_reserve(self, n: int) -> None:
        self.used += n

    def release(self, n: int) -> None:
        self.used = max(0, self.used - n)

    def notify(self) -> None:
        """Room may have freed up somewhere: wake every blocked writer to look again."""
        self._changed.set()
        self._changed = asyncio.Event()

    def changed(self) -> asyncio.Event:
        return self._changed


class StreamClosed(Exception):
    """The attempt was abandoned; its output is no longer wanted."""


class OutboundStream:
    def __init__(
        self,
        job_id: str,
        attempt: int,
        journal: Journal,
        budget: SpoolBudget,
        *,
        window_records: int,
        window_bytes: int,
        wake: Callable[[], None],
        next_seq: int = 1,
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.journal = journal
        self.budget = budget
        self.window_records = window_records
        self.window_bytes = window_bytes
        self.wake = wake
        self.mem: deque[tuple[int, bytes]] = deque()
        self.mem_bytes = 0
        self.acked = 0
        self.sent = 0
        self.next_seq = next_seq
        self.mem_hi = 0
        # Spooled rows of this attempt: seqs [spool_lo, spool_hi]; spool_lo = 0 when none.
        self.spool_lo = 1 if next_seq > 1 else 0
        self.spool_hi = next_seq - 1
        self.completion: Complete | None = None
        self.completion_sent = False
        self.closed = False

    # --- the plugin's side ----------------------------------------------------------------

    def _window_has_room(self, size: int) -> bool:
        if not self.mem:
            return True
        return len(self.mem) < self.window_records and self.mem_bytes + size <= self.window_bytes

    async def put(self, data: bytes) -> None:
        while True:
            if self.closed:
                raise StreamClosed(f"attempt {self.attempt} of job {self.job_id} was abandoned")
            changed = self.budget.changed()
            seq = self.next_seq
            spilled = self.mem_hi < seq - 1
            if not spilled and self._window_has_room(len(data)):
                self.mem.append((seq, data))
                self.mem_bytes += len(data)
                self.mem_hi = seq
                self.next_seq += 1
                self.wake()
                return
            if self.budget.try_reserve(len(data)):
                self.journal.spool_put(self.job_id, self.attempt, seq, data)
                if not self.spool_lo:
                    self.spool_lo = seq
                self.spool_hi = seq
                self.next_seq += 1
                return
            await changed.wait()

    async def put_many(self, items: Sequence[bytes]) -> None:
        """``put`` each of ``items`` in order; one wake-up for the batch while the window has room."""
        n = len(items)
        if n and not self.closed and self.mem_hi == self.next_seq - 1:
            size = sum(map(len, items))
            if len(self.mem) + n <= self.window_records and self.mem_bytes + size <= self.window_bytes:
                # The whole batch fits: no Python step per record (a fast query sends ~100k/s).
                seq = self.next_seq
                self.mem.extend(zip(range(seq, seq + n), items, strict=True))
                self.mem_bytes += size
                self.mem_hi = seq + n - 1
                self.next_seq = seq + n
                self.wake()
                return
        for data in items:
            # The fast path of ``put``, inlined: a streaming source sends thousands a second.
            if not self.closed and self.mem_hi == self.next_seq - 1 and self._window_has_room(len(data)):
                seq = self.next_seq
                self.mem.append((seq, data))
                self.mem_bytes += len(data)
                self.mem_hi = seq
                self.next_seq = seq + 1
            else:
                self.wake()
                await self.put(data)
        self.wake()

    def progress(self, done: int | None, total: int | None, message: str) -> None:
        self.last_progress = (done, total, message)
        self.progress_dirty = True
        self.wake()

    last_progress: tuple[int | None, int | None, str] = (None, None, "")
    progress_dirty = False

    # --- the connection's side ------------------------------------------------------------

    @property
    def record_count(self) -> int:
        return self.next_seq - 1

    def has_unsent(self) -> bool:
        return bool(self.mem) and self.mem[-1][0] > self.sent

    def take_batch(self, max_records: int, max_bytes: int) -> tuple[int, list[bytes]] | None:
        """The next records to send, in order; at least one even if it alone exceeds max_bytes."""
        if not self.has_unsent():
            return None
        start = self.sent - self.acked  # index of seq sent + 1 in mem
        batch: list[bytes] = []
        size = 0
        for _seq, data in itertools.islice(self.mem, start, start + max_records):
            if batch and size + len(data) > max_bytes:
                break
            batch.append(data)
            size += len(data)
        first = self.sent + 1
        self.sent += len(batch)
        return first, batch

    def on_ack(self, seq: int) -> None:
        if seq <= self.acked:
            return
        seq = min(seq, self.record_count)
        self.acked = seq
        while self.mem and self.mem[0][0] <= seq:
            self.mem_bytes -= len(self.mem.popleft()[1])
        self.sent = max(self.sent, seq)
        self.mem_hi = max(self.mem_hi, seq)
        if self.spool_lo and self.spool_lo <= seq:
            self.budget.release(self.journal.spool_trim(self.job_id, self.attempt, seq))
            self.spool_lo = seq + 1 if self.spool_hi > seq else 0
        self._refill()
        self.budget.notify()

    def _refill(self) -> None:
        """Read spooled records back into the window as it frees up."""
        room = self.window_records - len(self.mem)
        if self.mem_hi >= self.next_seq - 1 or room <= 0:
            return
        for seq, data in self.journal.spool_read(self.job_id, self.attempt, self.mem_hi, room):
            if seq != self.mem_hi + 1:
                # A hole in the spool would renumber every later record; never send past it.
                log.error(
                    "job %s attempt %d: spool lacks record %d; holding the stream",
                    self.job_id,
                    self.attempt,
                    self.mem_hi + 1,
                )
                break
            if self.mem and self.mem_bytes + len(data) > self.window_bytes:
                break
            self.mem.append((seq, data))
            self.mem_bytes += len(data)
            self.mem_hi = seq
        if self.has_unsent():
            self.wake()

    def resume(self, acked: int) -> None:
        """A new connection: the control plane has everything up to ``acked``; re-send the rest."""
        self.on_ack(acked)
        self.sent = self.acked
        self.completion_sent = False
        self._refill()
        self.wake()

    def finish(self, status: JobStatus, error: ErrorInfo | None, sync_state: SyncState | None = None) -> Complete:
        """The attempt ended: make its unacknowledged output durable, then queue completion.

        Afterwards the spool holds every unacknowledged record, ``acked + 1`` to the last, so
        a restart re-sends exactly those. Memory records already spooled (read back into
        the window) are not written twice, nor counted twice against the spool's budget.
        """
        added = self.journal.finish_job(
            self.job_id, self.attempt, status, error, self.next_seq, list(self.mem), sync_state
        )
        self.budget.force_reserve(added)
        if self.record_count > self.acked:
            self.spool_lo = self.acked + 1
            self.spool_hi = self.record_count
        self.completion = Complete(
            job_id=self.job_id,
            attempt=self.attempt,
            status=status,
            record_count=self.record_count,
            error=error,
            sync_state=sync_state,
        )
        self.wake()
        return self.completion

    def completion_ready(self) -> bool:
        return self.completion is not None and not self.completion_sent and self.sent >= self.record_count

    def close(self) -> None:
        self.closed = True
        self.mem.clear()
        self.mem_bytes = 0
        self.budget.notify()
