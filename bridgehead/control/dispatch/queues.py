"""Fair queues: which queued job goes to which agent, oldest first, agents in turn. No I/O.

Jobs wait per cluster and plugin, ordered by ``queue_seq`` (the store's submission order,
kept by a retry, so a retried job does not lose its place in line). An agent gets the
oldest job of its cluster among the plugins it has; the agents of a cluster with credit
take one job each per round, starting one further along each time, so the load spreads.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Protocol, TypeVar

from bridgehead.control.store.base import JobRow


class Taker(Protocol):
    """What the queues need of an agent: the plugins it can run."""

    @property
    def plugins(self) -> Collection[str]: ...


T = TypeVar("T", bound=Taker)


class FairQueues:
    def __init__(self) -> None:
        # cluster -> plugin -> queued (queue_seq, job_id), oldest first
        self.queues: dict[str, dict[str, deque[tuple[int, str]]]] = {}
        self.queued: dict[str, JobRow] = {}  # job id -> row, for every job in a queue
        self._rr: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.queued)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.queued

    def add(self, job: JobRow) -> None:
        queue = self.queues.setdefault(job.cluster, {}).setdefault(job.plugin, deque())
        entry = (job.queue_seq, job.id)
        if queue and queue[-1][0] > job.queue_seq:  # a retry: keep its original place in line
            items = sorted([*queue, entry])
            queue.clear()
            queue.extend(items)
        else:
            queue.append(entry)
        self.queued[job.id] = job

    def remove(self, job: JobRow) -> bool:
        """Take the job out of its queue; False if it was not queued."""
        queue = self.queues.get(job.cluster, {}).get(job.plugin)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove((job.queue_seq, job.id))
        return self.queued.pop(job.id, None) is not None

    def _next_for(self, cluster: str, plugins: Collection[str]) -> deque[tuple[int, str]] | None:
        """The queue holding the oldest job of the cluster that an agent with ``plugins`` can run."""
        best: deque[tuple[int, str]] | None = None
        for plugin, queue in self.queues.get(cluster, {}).items():
            if queue and plugin in plugins and (best is None or queue[0][0] < best[0][0]):
                best = queue
        return best

    def assign(self, cluster: str, takers: Callable[[], Sequence[T]]) -> Iterator[tuple[T, JobRow]]:
        """Hand out the cluster's queued jobs, one to each of ``takers()`` per round, in turn.

        ``takers`` is asked again each round (the caller spends an agent's credit on each job
        it is handed, so an agent drops out once it has none); the jobs handed out leave
        the queues. Ends when no taker is left or none can run anything queued.
        """
        if not self.queues.get(cluster):
            return
        while True:
            links = takers()
            if not links:
                return
            start = self._rr.get(cluster, 0) % len(links)
            progressed = False
            for link in [*links[start:], *links[:start]]:
                queue = self._next_for(cluster, link.plugins)
                if queue is None:
                    continue
                _seq, job_id = queue.popleft()
                if not progressed:
                    # Only a round that hands something out moves the first turn along: an
                    # empty round after it would move it again, and with two agents taking
                    # one job at a time the same agent would always go first.
                    self._rr[cluster] = start + 1
                    progressed = True
                yield link, self.queued.pop(job_id)
            if not progressed:
                return
