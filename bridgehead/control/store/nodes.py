"""The part of the store that several control-plane nodes share one database through
(PostgreSQL only: an SQLite file belongs to one process). The dispatcher uses it when its
store is a ``NodeStore`` (``bridgehead.control.nodes``); otherwise it keeps its queues in memory.

- *Claims.* ``claim_jobs`` takes queued jobs for one agent as new attempts held by this node,
  oldest first, skipping rows another node's transaction holds (``FOR UPDATE SKIP LOCKED``):
  no two nodes ever hold one attempt. The attempt is on record once the claim resolves, so
  its offer may go out then.
- *Holding attempts.* A running attempt is held by the node that claimed it, or that adopted
  it (``adopt_agent_attempts``: its agent opened a session there) or took it over
  (``take_over_node``: its node stopped or went silent). Every write about an attempt is
  fenced by the node that holds it (``JobStore``'s fencing, by node too).
- *Membership.* Each node writes a heartbeat; times are the database's clock, so nodes whose
  clocks disagree do not declare each other dead.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from bridgehead.control.store.rows import JobRow


@dataclass
class NodeRow:
    id: str
    url: str
    version: str
    started_at: float
    heartbeat_at: float
    agents: int  # sessions open there, as it last said
    running: int  # attempts it holds, as the database says
    stopped_at: float | None
    # Seconds since its heartbeat, by the database's clock when the list was read.
    silent_s: float = 0.0


class NodeStore(abc.ABC):
    node_id: str

    @abc.abstractmethod
    def on_signal(self, listener: Callable[[list[str]], None]) -> None:
        """Hear the signals other nodes' commits carry (``q:CLUSTER`` a job queued, ``q:``
        some job requeued, ``f:JOB`` a job ended, ``c:JOB`` a cancel asked, ``a:AGENT`` an
        agent's attempts moved to the sending node)."""

    @abc.abstractmethod
    async def listening(self) -> None:
        """Return once signals are heard."""

    @abc.abstractmethod
    def claim_jobs(
        self, cluster: str, plugins: Collection[str], agent: str, limit: int, now: float
    ) -> Awaitable[list[JobRow]]:
        """Up to ``limit`` queued jobs of ``cluster`` for a plugin in ``plugins`` whose
        ``not_before`` has passed, oldest first, each started as its next attempt on
        ``agent``, held by this node (as ``JobStore.start_attempt``); returned as started."""

    @abc.abstractmethod
    def adopt_agent_attempts(self, agent: str) -> Awaitable[list[JobRow]]:
        """Hold every running attempt of ``agent`` here, whichever node held it (the agent's
        session is here now); signals ``a:AGENT``. Returns them."""

    @abc.abstractmethod
    def take_over_node(self, node: str) -> Awaitable[list[JobRow]]:
        """Hold here every running attempt ``node`` held (it stopped or died; ``node`` may
        be this node's own name after a restart), and mark ``node`` stopped. Returns them."""

    @abc.abstractmethod
    def heartbeat(self, url: str, version: str, started_at: float, agents: int) -> Awaitable[object]:
        """This node is alive (its row made or refreshed, ``stopped_at`` cleared)."""

    @abc.abstractmethod
    def node_stopped(self) -> Awaitable[object]:
        """This node stops (its attempts may be taken over at once)."""

    @abc.abstractmethod
    async def list_nodes(self) -> list[NodeRow]:
        """Every node on record, by id."""

    @abc.abstractmethod
    def agent_left(self, agent: str) -> Awaitable[object]:
        """The agent's session on this node ended (and no newer one replaced it here)."""

    @abc.abstractmethod
    async def agents_elsewhere(self, dead_after_s: float) -> dict[str, str]:
        """Agents with a session on another node that is alive (heard from within
        ``dead_after_s``): name -> node."""

    @abc.abstractmethod
    async def queued_jobs(self) -> int:
        """How many jobs are queued, on every node (the queue is the database's)."""

    @abc.abstractmethod
    async def forget_nodes(self, stopped_before_s: float) -> int:
        """Drop the rows of nodes stopped more than ``stopped_before_s`` ago and holding
        nothing; how many."""
