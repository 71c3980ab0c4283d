"""Callers waiting for a job to end (``GET /jobs/{id}?wait=``), woken when its end is durable."""

from __future__ import annotations

import asyncio
from typing import Any


class Waiters:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[dict[str, Any]]]] = {}

    async def wait(self, job_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The fields the job's end changed, as stored; None once ``timeout_s`` passed."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(future)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[job_id]

    def waiting(self, job_id: str) -> bool:
        return job_id in self._waiters

    def finished(self, job_id: str, outcome: dict[str, Any]) -> None:
        for future in self._waiters.pop(job_id, ()):
            if not future.done():
                future.set_result(outcome)
