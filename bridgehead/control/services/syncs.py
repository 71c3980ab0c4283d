"""Deliveries to sinks as callers see them: a job's rejected records, retrying a failed
delivery, and the kept state of named syncs (where each one's next run starts from)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from bridgehead.control.services.errors import Conflict, NotFound
from bridgehead.control.store.base import Store
from bridgehead.control.store.rows import Actor, JobRow


class SyncService:
    def __init__(self, store: Store, deliver: Callable[[str, str], None]) -> None:
        self.store = store
        self.deliver = deliver  # the sink runner's job_finished(job_id, state)

    @staticmethod
    def check_sink(job: JobRow) -> None:
        if job.sink is None:
            raise NotFound(f"job {job.id} has no sink", code="no_sink")

    async def errors(self, job: JobRow, after: int, limit: int) -> dict[str, Any]:
        """Records the instance rejected, with its message, in record order."""
        self.check_sink(job)
        rows = await self.store.rejected(job.id, after, limit)
        body = [{"seq": r.seq, "status": r.status, "message": r.message, "record": r.record} for r in rows]
        return {"errors": body, "next": rows[-1].seq if len(rows) == limit else None}

    async def retry(self, job: JobRow, actor: Actor) -> None:
        """Resume a failed delivery (after fixing a secret, or once the instance is back):
        from its cursor, so nothing delivered is sent again."""
        delivery = await self.store.delivery(job.id)
        if delivery is None or delivery.state != "failed":
            raise Conflict(
                f"job {job.id}'s delivery is {delivery.state if delivery else 'not started'}: "
                "only a failed one is retried",
                code="sync_not_failed",
            )
        await self.store.retry_delivery(job.id, time.time())
        await self.store.audit(actor, "sync.retry", {"job": job.id}, time.time())
        self.deliver(job.id, "succeeded")

    async def states(self, after: str, limit: int) -> list[dict[str, Any]]:
        """The kept state of every named sync, by name."""
        return [dataclasses.asdict(s) for s in await self.store.sync_states(after, limit)]

    async def forget(self, name: str, actor: Actor) -> dict[str, Any]:
        """Forget a sync's state: its next run returns every entry again, and reports no
        deletions (there is nothing to compare with)."""
        if await self.store.sync_state(name) is None:
            raise NotFound(f"no sync named {name!r} has a kept state", code="sync_not_found")
        await self.store.delete_sync_state(name)
        await self.store.audit(actor, "sync.reset", {"sync": name}, time.time())
        return {"name": name, "deleted": True}
