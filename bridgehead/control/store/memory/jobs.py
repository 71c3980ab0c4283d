"""The in-memory store's jobs, records and sync states (the contract: ``store.jobs``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Sequence

from bridgehead.control.store.memory.deliveries import queue_delivery_now
from bridgehead.control.store.memory.state import Batch, KeptSync, MemoryWrites, copied
from bridgehead.control.store.rows import JobRow, SyncSummary, json_size
from bridgehead.protocol import SyncState

log = logging.getLogger("bridgehead.control.store")


class IdempotencyKeyTaken(Exception):
    """Inside the store only: ``create_job`` turns it into (existing job, False)."""


class JobTables(MemoryWrites):
    async def create_job(self, job: JobRow) -> tuple[JobRow, bool]:
        job.queue_seq = self._next_queue_seq()
        try:
            await self._write(lambda: self._insert_job(job))
        except IdempotencyKeyTaken:
            assert job.idempotency_key is not None  # noqa: S101 - only a key can be taken
            return copied(self.state.jobs[self.state.idempotency_keys[job.idempotency_key]]), False
        return job, True

    def insert_job(self, job: JobRow) -> Awaitable[None]:
        if job.idempotency_key is not None:
            raise ValueError("a job with an idempotency key goes through create_job")
        job.queue_seq = self._next_queue_seq()
        return self._write(lambda: self._insert_job(job))

    def _next_queue_seq(self) -> int:
        self.state.queue_seq += 1
        return self.state.queue_seq

    def _insert_job(self, job: JobRow) -> None:
        if job.idempotency_key is not None and job.idempotency_key in self.state.idempotency_keys:
            raise IdempotencyKeyTaken(job.idempotency_key)
        if job.id in self.state.jobs:
            raise ValueError(f"job {job.id} exists already")
        # What SQLite's insert writes: the rest of the row starts from its defaults.
        self.state.jobs[job.id] = JobRow(
            id=job.id,
            plugin=job.plugin,
            params=copied(job.params),
            cluster=job.cluster,
            max_attempts=job.max_attempts,
            timeout_s=job.timeout_s,
            idempotency_key=job.idempotency_key,
            sink=copied(job.sink),
            created_at=job.created_at,
            queue_seq=job.queue_seq,
        )
        if job.idempotency_key is not None:
            self.state.idempotency_keys[job.idempotency_key] = job.id

    def _current(self, job_id: str, attempt: int) -> JobRow | None:
        """The job, if ``attempt`` is its current attempt (fencing)."""
        job = self.state.jobs.get(job_id)
        return job if job is not None and job.attempt == attempt else None

    async def get_job(self, job_id: str) -> JobRow | None:
        return copied(self.state.jobs.get(job_id))

    async def list_jobs(
        self, state: str | None, cluster: str | None, limit: int, before: str | None, max_bytes: int | None = None
    ) -> list[JobRow]:
        jobs = sorted(self.state.jobs.values(), key=lambda j: j.queue_seq, reverse=True)
        if before:
            mark = self.state.jobs.get(before)
            jobs = [j for j in jobs if mark is not None and j.queue_seq < mark.queue_seq]
        out: list[JobRow] = []
        size = 0
        for job in jobs:
            if (state and job.state != state) or (cluster and job.cluster != cluster):
                continue
            if 0 <= limit <= len(out):
                break
            out.append(copied(job))
            size += json_size(job.params) + json_size(job.sink)
            if max_bytes is not None and size >= max_bytes:
                break
        return out

    async def jobs_in_state(self, state: str) -> list[JobRow]:
        return [copied(j) for j in sorted(self.state.jobs.values(), key=lambda j: j.queue_seq) if j.state == state]

    def start_attempt(self, job_id: str, attempt: int, agent: str, now: float) -> Awaitable[None]:
        def op() -> None:
            job = self.state.jobs.get(job_id)
            if job is None:
                return
            job.state, job.attempt, job.agent, job.started_at = "running", attempt, agent, now
            job.accepted = job.safe_to_repeat = False
            job.acked_seq = job.record_count = 0
            for key in [k for k in self.state.record_batches if k[0] == job_id and k[1] < attempt]:
                del self.state.record_batches[key]

        return self._write(op)

    def mark_accepted(self, job_id: str, attempt: int, safe_to_repeat: bool) -> Awaitable[None]:
        def op() -> None:
            job = self._current(job_id, attempt)
            if job is not None:
                job.accepted, job.safe_to_repeat = True, safe_to_repeat

        return self._write(op)

    def append_records(self, job_id: str, attempt: int, first_seq: int, records: Sequence[bytes]) -> Awaitable[None]:
        last_seq = first_seq + len(records) - 1
        batch = Batch(first_seq, list(records))

        def op() -> None:
            job = self._current(job_id, attempt)
            if job is None:
                return  # fenced: a stale attempt's records are not kept
            self.state.record_batches.setdefault((job_id, attempt), {}).setdefault(last_seq, batch)
            job.acked_seq = max(job.acked_seq, last_seq)

        return self._write(op)

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
    ) -> Awaitable[None]:
        def op() -> None:
            job = self._current(job_id, attempt)
            if job is None:
                return  # fenced
            job.state, job.error_code, job.error_message = state, error_code, error_message
            job.record_count, job.finished_at = record_count, now
            if sync_state is not None and state == "succeeded":
                self._keep_sync_state(sync_state, job_id, now)
            if state == "succeeded":
                queue_delivery_now(self.state, job_id, attempt, now)  # in the same commit: never lost

        return self._write(op)

    def _keep_sync_state(self, state: SyncState, job_id: str, now: float) -> None:
        kept = self.state.sync_states.get(state.name)
        if (kept is None and state.version == 0) or (kept is not None and kept.state.version == state.version):
            next_state = SyncState(name=state.name, version=state.version + 1, watermark=state.watermark, ids=state.ids)
            self.state.sync_states[state.name] = KeptSync(next_state, job_id, now)
            return
        log.warning(
            "sync %r: job %s started from state version %d, which another run has replaced; "
            "its records stand, its state is not kept",
            state.name,
            job_id,
            state.version,
        )

    def requeue_job(
        self, job_id: str, error_code: str | None, error_message: str | None, not_before: float | None = None
    ) -> Awaitable[None]:
        def op() -> None:
            job = self.state.jobs.get(job_id)
            if job is not None:
                job.state, job.agent, job.accepted = "queued", None, False
                job.error_code, job.error_message = error_code, error_message

        return self._write(op)

    def request_cancel(self, job_id: str) -> Awaitable[None]:
        def op() -> None:
            job = self.state.jobs.get(job_id)
            if job is not None:
                job.cancel_requested = True

        return self._write(op)

    async def records(
        self, job_id: str, attempt: int, after: int, limit: int, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        cap = max_bytes if max_bytes is not None else sys.maxsize
        out: list[tuple[int, bytes]] = []
        total = 0
        batches = self.state.record_batches.get((job_id, attempt), {})
        for last_seq in sorted(s for s in batches if s > after):
            batch = batches[last_seq]
            for seq, data in enumerate(batch.records, batch.first_seq):
                if seq <= after:
                    continue
                if len(out) >= limit or (total + len(data) > cap and out):
                    return out
                out.append((seq, data))
                total += len(data)
        return out

    # --- sync states ------------------------------------------------------------------------

    async def sync_state(self, name: str) -> SyncState | None:
        kept = self.state.sync_states.get(name)
        return copied(kept.state) if kept is not None else None

    async def sync_states(self, after: str = "", limit: int = -1) -> list[SyncSummary]:
        names = sorted(n for n in self.state.sync_states if n > after)
        out = []
        for name in names[: limit if limit >= 0 else None]:
            kept, state = self.state.sync_states[name], self.state.sync_states[name].state
            identities = len(state.ids) // 16  # 16 bytes an identity (a UUID)
            out.append(SyncSummary(name, state.version, state.watermark, identities, kept.job_id, kept.updated_at))
        return out

    def delete_sync_state(self, name: str) -> Awaitable[None]:
        def op() -> None:
            self.state.sync_states.pop(name, None)

        return self._write(op)
