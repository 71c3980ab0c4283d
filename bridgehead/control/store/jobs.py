"""The jobs part of the store contract: jobs and their attempts, records, sync states.

Promises beyond the general ones of ``bridgehead.control.store.base``:

- *Queue order.* The store gives every job its ``queue_seq`` when ``create_job`` or
  ``insert_job`` is called, before the write is durable: increasing in call order, and
  after a restart greater than every one stored (a refused insert leaves a harmless gap).
  A requeued job keeps its ``queue_seq``, so a retry keeps its place in line.
  ``jobs_in_state`` is in ``queue_seq`` order, ``list_jobs`` in the reverse. SQLite counts
  in the process, which owns the file; PostgreSQL takes them from a sequence, each node
  reserving a block ahead (``insert_job`` sets it without a round trip), so the order is
  the order of submission on each node and of block reservation between nodes.
- *Idempotency keys.* A key names one job for good: ``create_job`` with a key some stored job
  has returns that job and ``False`` and stores nothing; of concurrent creations with one key
  exactly one returns ``True``.
- *Fencing.* The writes that name an attempt take effect only while it is the job's current
  attempt (the last ``start_attempt``); for any other they resolve normally, raise nothing
  and change nothing anyone reads: ``mark_accepted`` and ``finish_job`` (its state, sync
  state and delivery) do nothing, ``append_records`` moves no ``acked_seq`` and its records
  never appear among the current attempt's (``records`` reads one attempt). So a late
  message from an agent that lost its lease is dropped here even if the caller missed it.
  (SQLite stores such a stale batch under its own attempt, where nothing reads it: its
  append stays the two statements the dispatch benchmark measured.)
- *Ending a job.* ``finish_job`` as ``succeeded`` queues the job's sink delivery (see
  ``DeliveryStore.queue_delivery``) and keeps its sync state in the same atomic commit: the
  job is never seen succeeded without them.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Sequence

from bridgehead.control.store.rows import JobRow, SyncSummary
from bridgehead.protocol import SyncState


class JobStore(abc.ABC):
    @abc.abstractmethod
    async def create_job(self, job: JobRow) -> tuple[JobRow, bool]:
        """Insert ``job`` (its ``queue_seq`` set by the store) and return it with ``True`` once
        durable; with an idempotency key already used, return (existing job, ``False``)."""

    @abc.abstractmethod
    def insert_job(self, job: JobRow) -> Awaitable[None]:
        """Insert ``job``, which has no idempotency key, and set its ``queue_seq`` before this
        returns; the write is ordered before any later one, so the job's first attempt may be
        issued at once, ahead of this one's durability."""

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> JobRow | None: ...

    @abc.abstractmethod
    async def list_jobs(
        self, state: str | None, cluster: str | None, limit: int, before: str | None, max_bytes: int | None = None
    ) -> list[JobRow]:
        """Newest first (by ``queue_seq``), those before job ``before``; with ``max_bytes``, stop
        once the jobs' params and sinks (``json_size``) reach it (at least one job)."""

    @abc.abstractmethod
    async def jobs_in_state(self, state: str) -> list[JobRow]:
        """Every job in ``state``, by ``queue_seq`` (to rebuild queues and leases at start)."""

    @abc.abstractmethod
    def start_attempt(self, job_id: str, attempt: int, agent: str, now: float) -> Awaitable[object]:
        """The job runs as ``attempt`` on ``agent`` (``running``, not accepted, ``acked_seq`` and
        ``record_count`` 0); earlier attempts' records are dropped in the same commit."""

    @abc.abstractmethod
    def mark_accepted(self, job_id: str, attempt: int, safe_to_repeat: bool) -> Awaitable[object]:
        """The agent accepted the attempt (fenced)."""

    @abc.abstractmethod
    def append_records(self, job_id: str, attempt: int, first_seq: int, records: Sequence[bytes]) -> Awaitable[object]:
        """Store records ``first_seq`` ... of the attempt and advance its ``acked_seq``, in one
        commit (fenced). A batch appended again (same last seq) is kept once; the caller passes
        only records past ``acked_seq``, so batches never overlap."""

    @abc.abstractmethod
    def finish_job(
        self,
        job_id: str,
        attempt: int,
        state: str,
        error_code: str | None,
        error_message: str | None,
        record_count: int,
        now: float,
        sync_state: SyncState | None = None,
    ) -> Awaitable[object]:
        """End the attempt's job in ``state`` (fenced). As ``succeeded``, in the same commit:
        queue its sink delivery, and with ``sync_state`` keep that for the sync's next run,
        unless another run replaced the state this one started from (its ``version``)."""

    @abc.abstractmethod
    def requeue_job(
        self, job_id: str, error_code: str | None, error_message: str | None, not_before: float | None = None
    ) -> Awaitable[object]:
        """Back to ``queued``, no agent, not accepted (the next dispatch is a new attempt); the
        reason is kept; ``queue_seq`` stays. ``not_before`` (wall clock): no node claims it
        earlier (a retry's backoff; stores whose one process keeps the queue in memory, as
        SQLite's and the memory store's, leave the wait to it)."""

    @abc.abstractmethod
    def request_cancel(self, job_id: str) -> Awaitable[object]:
        """Mark the job's cancel requested (it ends when its agent says so)."""

    @abc.abstractmethod
    async def records(
        self, job_id: str, attempt: int, after: int, limit: int, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        """The attempt's records after seq ``after``, in seq order: at most ``limit``, and at
        most ``max_bytes`` of them in total unless the first alone is larger (then it alone).
        Reads no more than that."""

    # --- sync states ------------------------------------------------------------------------
    @abc.abstractmethod
    async def sync_state(self, name: str) -> SyncState | None:
        """The kept state of sync ``name`` (None before its first successful run)."""

    @abc.abstractmethod
    async def sync_states(self, after: str = "", limit: int = -1) -> list[SyncSummary]:
        """By name, after ``after``; at most ``limit`` (-1: all)."""

    @abc.abstractmethod
    def delete_sync_state(self, name: str) -> Awaitable[object]:
        """Forget a sync's state: its next run returns every entry again."""
