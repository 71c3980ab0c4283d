"""Dispatch from the database, for several nodes on one: a cluster's queue is its queued rows,
and a node hands jobs to the agents connected to it by claiming them (``NodeStore.claim_jobs``)
instead of popping an in-memory queue. Whichever node an agent is on, it gets the oldest job
of its cluster that it can run, as soon as a claim runs after the job's commit.

A claim runs when something may have changed: a job submitted or requeued here or on another
node (their ``q:`` signal), an agent's credit, a link activated, and once a second for every
cluster this node serves (signals can be missed). One claim round per cluster at a time; a
wake-up during a round runs another after it. Each agent with credit claims up to
``CLAIM_BATCH`` jobs per round, agents in turn, so the oldest jobs spread over the agents.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from bridgehead.control.dispatch.durability import Durability
from bridgehead.control.dispatch.links import AgentLink
from bridgehead.control.store.nodes import NodeStore
from bridgehead.control.store.rows import JobRow

CLAIM_BATCH = 16


class ClaimHost(Protocol):
    links: dict[str, AgentLink]
    durability: Durability

    def offer_claimed(self, link: AgentLink, job: JobRow) -> None: ...


class Claims:
    def __init__(self, host: ClaimHost, store: NodeStore) -> None:
        self.host = host
        self.store = store
        self._claiming: set[str] = set()
        self._again: set[str] = set()
        self._turn: dict[str, int] = {}

    def clusters(self) -> set[str]:
        """The clusters of the agents connected here."""
        return {link.cluster for link in self.host.links.values()}

    def dispatch_all(self) -> None:
        for cluster in self.clusters():
            self.dispatch(cluster)

    def dispatch(self, cluster: str) -> None:
        """Claim what the cluster's agents here can take now (a round, or one after it)."""
        if cluster in self._claiming:
            self._again.add(cluster)
            return
        takers = [link for link in self.host.links.values() if link.cluster == cluster and link.takes_offers]
        if not takers:
            return
        turn = self._turn.get(cluster, 0) % len(takers)
        self._turn[cluster] = turn + 1
        takers = takers[turn:] + takers[:turn]
        self._claiming.add(cluster)
        now = time.time()
        filled: list[bool] = []  # per agent: got all it asked for (more may be waiting)
        taken: list[asyncio.Future[None]] = []
        for link in takers:
            want = min(link.credit, CLAIM_BATCH)
            link.credit -= want  # spoken for while the claim is in flight
            claim = asyncio.ensure_future(self.store.claim_jobs(cluster, link.plugins, link.name, want, now))
            taken.append(self.host.durability.after(claim, _taking(self.host, link, want, claim, filled)))
        done = asyncio.gather(*taken, return_exceptions=True)
        done.add_done_callback(lambda _f: self._round_over(cluster, any(filled)))

    def _round_over(self, cluster: str, full: bool) -> None:
        self._claiming.discard(cluster)
        if cluster in self._again or full:
            self._again.discard(cluster)
            self.dispatch(cluster)


def _taking(
    host: ClaimHost, link: AgentLink, want: int, claim: asyncio.Future[list[JobRow]], filled: list[bool]
) -> Callable[[], None]:
    """What to do once the claim is durable: offer each job claimed, give back unused credit."""

    def take() -> None:
        jobs = claim.result()
        filled.append(len(jobs) == want)
        link.credit += want - len(jobs)
        for job in jobs:
            host.offer_claimed(link, job)

    return take
