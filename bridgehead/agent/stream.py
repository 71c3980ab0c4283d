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

from bridgehead.agent.journal import Journal
from bridgehead.protocol import Complete, ErrorInfo, SyncState, jobs
from bridgehead.protocol.messages import JobStatus
from bridgehead.sdk.records import RecordArray

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
        # Runs of consecutive records, (first seq, records), in seq order: a batch a plugin
        # emits stays one run, so the connection's side does no Python step per record.
        # ``sent`` always falls on a run boundary: the first ``sent_runs`` runs have been sent
        # (take_batch cuts up a run it cannot send whole), the others not.
        self.mem: deque[tuple[int, RecordArray]] = deque()
        self.sent_runs = 0
        self.mem_count = 0
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
        return self.mem_count < self.window_records and self.mem_bytes + size <= self.window_bytes

    def _hold(self, seq: int, records: RecordArray) -> None:
        """Keep ``records``, numbered from ``seq``, in the window (the caller checked room)."""
        self.mem.append((seq, records))
        self.mem_count += records.count
        self.mem_bytes += records.size
        self.mem_hi = seq + records.count - 1

    async def put(self, data: bytes) -> None:
        while True:
            if self.closed:
                raise StreamClosed(f"attempt {self.attempt} of job {self.job_id} was abandoned")
            changed = self.budget.changed()
            seq = self.next_seq
            spilled = self.mem_hi < seq - 1
            if not spilled and self._window_has_room(len(data)):
                self._hold(seq, RecordArray.of_encoded([data]))
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

    def _try_hold(self, records: RecordArray, size: int) -> bool:
        """Keep a whole batch in the window if it fits, with one wake-up; else False."""
        n = records.count
        if (
            n
            and not self.closed
            and self.mem_hi == self.next_seq - 1
            and self.mem_count + n <= self.window_records
            and self.mem_bytes + size <= self.window_bytes
        ):
            self._hold(self.next_seq, records)
            self.next_seq += n
            self.wake()
            return True
        return False

    async def put_many(self, items: Sequence[bytes]) -> None:
        """``put`` each of ``items`` in order; one wake-up for the batch while the window has room,
        and one statement for the records that go to the spool while its budget has room."""
        if items and self._try_hold(RecordArray.of_encoded(items), sum(map(len, items))):
            return
        i, n = 0, len(items)
        bulk = True  # tried once: a spool too full for the rest takes records one by one
        while i < n:
            data = items[i]
            # The fast path of ``put``, inlined: a streaming source sends thousands a second.
            if not self.closed and self.mem_hi == self.next_seq - 1 and self._window_has_room(len(data)):
                self._hold(self.next_seq, RecordArray.of_encoded([data]))
                self.next_seq += 1
                i += 1
            elif bulk and not self.closed and self.budget.try_reserve(sum(map(len, items[i:]))):
                # Spilled (or the window is full) and the spool takes all the rest: once
                # spilled, every later record follows into the spool until it is read back.
                self.journal.spool_put_many(self.job_id, self.attempt, self.next_seq, items[i:])
                if not self.spool_lo:
                    self.spool_lo = self.next_seq
                self.next_seq += n - i
                self.spool_hi = self.next_seq - 1
                break
            else:
                bulk = False
                self.wake()
                await self.put(data)  # one at a time, blocking while the spool is full
                i += 1
        self.wake()

    async def put_array(self, records: RecordArray) -> None:
        """``put_many`` for records encoded as one array: kept whole while the window has room."""
        if not self._try_hold(records, records.size):
            await self.put_many(records.records())

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
        if not self.mem:
            return False
        seq, records = self.mem[-1]
        return seq + records.count - 1 > self.sent

    def take_batch(self, max_records: int, max_bytes: int) -> tuple[int, list[RecordArray]] | None:
        """The next records to send, in order, as whole runs; at least one record even if it
        alone exceeds max_bytes. A run too large for one batch is cut into pieces first."""
        if not self.has_unsent():
            return None
        mem = self.mem
        batch: list[RecordArray] = []
        count = size = 0
        for i, (_seq, records) in enumerate(itertools.islice(mem, self.sent_runs, None), self.sent_runs):
            n, run_size = records.count, records.size
            if count + n <= max_records and size + run_size <= max_bytes:
                batch.append(records)
                count += n
                size += run_size
                continue
            if not batch:
                self._cut(i, max_records, max_bytes)
                records = mem[i][1]
                batch.append(records)
                count = records.count
            break
        first = self.sent + 1
        self.sent += count
        self.sent_runs += len(batch)
        return first, batch

    def _cut(self, i: int, max_records: int, max_bytes: int) -> None:
        """Replace run ``i`` by pieces that each fit one batch (at least one record each)."""
        seq, records = self.mem[i]
        pieces: list[tuple[int, RecordArray]] = []
        piece: list[bytes] = []
        size = 0
        for data in records.records():
            if piece and (len(piece) >= max_records or size + len(data) > max_bytes):
                pieces.append((seq, RecordArray.of_encoded(piece)))
                seq += len(piece)
                piece, size = [], 0
            piece.append(data)
            size += len(data)
        pieces.append((seq, RecordArray.of_encoded(piece)))
        del self.mem[i]
        for offset, run in enumerate(pieces):
            self.mem.insert(i + offset, run)

    def on_ack(self, seq: int) -> None:
        acked = jobs.next_acked(self.acked, seq, self.record_count)
        if acked is None:
            return
        self.acked = seq = acked
        mem = self.mem
        popped = 0
        while mem:
            first, records = mem[0]
            if first > seq:
                break
            mem.popleft()
            popped += 1
            self.mem_count -= records.count
            self.mem_bytes -= records.size
            if first + records.count - 1 > seq:  # acknowledged part-way (a resume): keep the rest
                _done, rest = records.split(seq - first + 1)
                mem.appendleft((seq + 1, rest))
                popped -= 1
                self.mem_count += rest.count
                self.mem_bytes += rest.size
                break
        # Acked past what was sent: nothing left in memory was sent. Else the sent runs popped.
        self.sent_runs = 0 if seq >= self.sent else self.sent_runs - popped
        self.sent = max(self.sent, seq)
        self.mem_hi = max(self.mem_hi, seq)
        if self.spool_lo and self.spool_lo <= seq:
            self.budget.release(self.journal.spool_trim(self.job_id, self.attempt, seq))
            self.spool_lo = seq + 1 if self.spool_hi > seq else 0
        self._refill()
        self.budget.notify()

    def _refill(self) -> None:
        """Read spooled records back into the window as it frees up."""
        room = self.window_records - self.mem_count
        if self.mem_hi >= self.next_seq - 1 or room <= 0:
            return
        first = self.mem_hi + 1
        records: list[bytes] = []
        size = self.mem_bytes
        for seq, data in self.journal.spool_read(self.job_id, self.attempt, self.mem_hi, room):
            if seq != first + len(records):
                # A hole in the spool would renumber every later record; never send past it.
                log.error(
                    "job %s attempt %d: spool lacks record %d; holding the stream",
                    self.job_id,
                    self.attempt,
                    first + len(records),
                )
                break
            if (self.mem or records) and size + len(data) > self.window_bytes:
                break
            records.append(data)
            size += len(data)
        if records:
            self._hold(first, RecordArray.of_encoded(records))
        if self.has_unsent():
            self.wake()

    def resume(self, acked: int) -> None:
        """A new connection: the control plane has everything up to ``acked``; re-send the rest."""
        self.on_ack(acked)
        self.sent = self.acked
        self.sent_runs = 0
        self.completion_sent = False
        self._refill()
        self.wake()

    def finish(self, status: JobStatus, error: ErrorInfo | None, sync_state: SyncState | None = None) -> Complete:
        """The attempt ended: make its unacknowledged output durable, then queue completion.

        Afterwards the spool holds every unacknowledged record, ``acked + 1`` to the last, so
        a restart re-sends exactly those. Memory records already spooled (read back into
        the window) are not written twice, nor counted twice against the spool's budget.
        """
        unacked = [item for seq, records in self.mem for item in enumerate(records.records(), seq)]
        added = self.journal.finish_job(self.job_id, self.attempt, status, error, self.next_seq, unacked, sync_state)
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
        return (
            self.completion is not None
            and not self.completion_sent
            and jobs.completion_ready(self.sent, self.record_count)
        )

    def close(self) -> None:
        self.closed = True
        self.mem.clear()
        self.sent_runs = 0
        self.mem_count = 0
        self.mem_bytes = 0
        self.budget.notify()
