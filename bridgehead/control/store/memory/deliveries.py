"""The in-memory store's sink deliveries and refresh tokens (the contract: ``store.deliveries``)."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from bridgehead.control.store.memory.state import MemoryState, MemoryWrites, SinkDelivery, copied
from bridgehead.control.store.rows import COUNTS, TERMINAL_STATES, Delivery, Rejected


def queue_delivery_now(state: MemoryState, job_id: str, attempt: int, now: float) -> bool:
    """Inside a write: the pending delivery of a succeeded job with a sink (see SQLite's)."""
    job = state.jobs.get(job_id)
    if job is None or job.attempt != attempt or job.state != "succeeded" or job.sink is None:
        return False
    if job_id in state.deliveries:
        return False
    instance = job.sink.get("servicenow")
    state.deliveries[job_id] = SinkDelivery(
        job_id, str(instance) if instance is not None else "", "pending", 0, job.record_count, now, now
    )
    return True


def _delivery(d: SinkDelivery) -> Delivery:
    return Delivery(
        d.job_id, d.instance, d.state, d.batch_size, d.total, d.error_code, d.error_message, d.started_at, d.finished_at
    )


def _claimable(d: SinkDelivery, node: str, now: float) -> bool:
    return d.node is None or d.node == node or d.lease_until < now


def _holds(d: SinkDelivery | None, node: str) -> bool:
    return d is not None and d.state == "delivering" and d.node == node


class DeliveryTables(MemoryWrites):
    def queue_delivery(self, job_id: str, attempt: int, now: float) -> Awaitable[bool]:
        return self._write(lambda: queue_delivery_now(self.state, job_id, attempt, now))

    async def deliveries_to_run(self, limit: int, node: str, now: float) -> list[str]:
        due = [
            d.job_id
            for d in self.state.deliveries.values()
            if d.state in ("pending", "delivering") and _claimable(d, node, now)
        ]
        return due[: max(limit, 0)]

    async def start_delivery(
        self, job_id: str, batch_size: int, now: float, node: str, until: float
    ) -> Delivery | None:
        def op() -> bool:
            d = self.state.deliveries.get(job_id)
            if d is None or d.state not in ("pending", "delivering") or not _claimable(d, node, now):
                return False
            if d.batch_size == 0:
                d.started_at, d.batch_size = now, batch_size
            d.state, d.error_code, d.error_message, d.updated_at = "delivering", None, None, now
            d.node, d.lease_until = node, until
            return True

        if not await self._write(op):
            return None
        return await self.delivery(job_id)

    async def renew_deliveries(self, node: str, job_ids: Sequence[str], until: float) -> set[str]:
        def op() -> set[str]:
            held = {job_id for job_id in job_ids if _holds(self.state.deliveries.get(job_id), node)}
            for job_id in held:
                self.state.deliveries[job_id].lease_until = until
            return held

        return await self._write(op)

    async def delivery(self, job_id: str) -> Delivery | None:
        d = self.state.deliveries.get(job_id)
        return _delivery(d) if d is not None else None

    async def delivered_batches(self, job_id: str) -> set[int]:
        d = self.state.deliveries.get(job_id)
        return set(d.batches) if d is not None else set()

    def finish_batch(
        self,
        job_id: str,
        first_seq: int,
        last_seq: int,
        counts: dict[str, int],
        rejected: Sequence[Rejected],
        now: float,
        node: str,
    ) -> Awaitable[bool]:
        kept = {c: counts.get(c, 0) for c in COUNTS}
        rejected = copied(list(rejected))

        def op() -> bool:
            d = self.state.deliveries.get(job_id)
            if d is None or not _holds(d, node):
                return False
            d.batches[first_seq] = (last_seq, kept)
            d.rejected.update((r.seq, r) for r in rejected)
            d.rejected = dict(sorted(d.rejected.items()))
            d.updated_at = now
            return True

        return self._write(op)

    def end_delivery(
        self, job_id: str, state: str, error_code: str | None, error_message: str | None, now: float, node: str
    ) -> Awaitable[bool]:
        def op() -> bool:
            d = self.state.deliveries.get(job_id)
            if d is None or d.node != node:
                return False
            d.state, d.error_code, d.error_message, d.updated_at = state, error_code, error_message, now
            d.finished_at = now if state in ("done", "failed") else None
            d.node, d.lease_until = None, 0.0
            return True

        return self._write(op)

    def retry_delivery(self, job_id: str, now: float) -> Awaitable[None]:
        def op() -> None:
            d = self.state.deliveries.get(job_id)
            if d is not None and d.state == "failed":
                d.state, d.error_code, d.error_message, d.updated_at, d.finished_at = "pending", None, None, now, None

        return self._write(op)

    async def delivery_counts(self, job_id: str) -> dict[str, int]:
        d = self.state.deliveries.get(job_id)
        batches = list(d.batches.items()) if d is not None else []
        counts = {c: sum(kept[c] for _first, (_last, kept) in batches) for c in COUNTS}
        return {**counts, "delivered": sum(last - first + 1 for first, (last, _kept) in batches)}

    async def rejected_count(self, job_id: str) -> int:
        d = self.state.deliveries.get(job_id)
        return len(d.rejected) if d is not None else 0

    async def rejected(self, job_id: str, after: int, limit: int) -> list[Rejected]:
        d = self.state.deliveries.get(job_id)
        found = [r for seq, r in d.rejected.items() if seq > after] if d is not None else []
        return copied(found[: limit if limit >= 0 else None])

    async def delivery_finished(self, job_id: str) -> bool:
        job = self.state.jobs.get(job_id)
        if job is None:
            return True
        if job.sink is None or job.state in ("failed", "cancelled"):
            return job.state in TERMINAL_STATES
        d = self.state.deliveries.get(job_id)
        return job.state == "succeeded" and d is not None and d.state in ("done", "failed")

    # --- OAuth refresh tokens ------------------------------------------------------------

    async def refresh_token(self, instance: str) -> tuple[str, str] | None:
        kept = self.state.refresh_tokens.get(instance)
        return (kept[0], kept[1]) if kept is not None else None

    def keep_refresh_token(self, instance: str, token: str, origin: str, now: float) -> Awaitable[None]:
        def op() -> None:
            self.state.refresh_tokens[instance] = (token, origin, now)

        return self._write(op)
