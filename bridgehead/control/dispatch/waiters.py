"""Callers waiting for a job to end (``GET /jobs/{id}?wait=``), woken when its end is durable."""

from __future__ import annotations

import asyncio
from typing import Any

Outcome = dict[str, Any]


class Waiters:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[Outcome]]] = {}

    def register(self, job_id: str) -> asyncio.Future[Outcome]:
        """A waiter for the job's end, in place from now on (``until`` waits on it). Register
        first, then look whether the job ended already: the other way round, an end that
        lands between the look and the registration wakes nobody."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(future)
        return future

    async def until(self, job_id: str, future: asyncio.Future[Outcome], timeout_s: float) -> Outcome | None:
        """The fields the job's end changed, as stored; None once ``timeout_s`` passed."""
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

    def finished(self, job_id: str, outcome: Outcome) -> None:
        for future in self._waiters.pop(job_id, ()):
            if not future.done():
                future.set_result(outcome)
