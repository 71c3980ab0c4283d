"""One node among several on a PostgreSQL database: what it hears from the others, and the
membership loop that keeps the shared work moving when a node stops or dies.

Signals (``NodeStore.on_signal``) from other nodes' commits:

- ``q:CLUSTER`` (``q:`` for any): jobs queued there; claim for the agents connected here.
- ``f:JOB``: a job ended there; wake whoever waits for it here (``?wait=``).
- ``c:JOB``: a cancel was asked there; if the attempt runs on an agent here, tell it.
- ``a:AGENT``: the agent opened a session on another node, which now holds its attempts: a
  session of it still open here is stale (closed), and its attempts are no longer ours
  (dropped from memory without a write: the store fences this node out of them anyway).

Every second: this node's heartbeat; the attempts of nodes that stopped or fell silent for
``dead_after_s`` are taken over (they get the restart grace, as after a restart, for their
agents to reconnect somewhere); and a claim round for every cluster served here, for any
signal that was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from bridgehead import __version__
from bridgehead.control.dispatch.durability import Durability
from bridgehead.control.dispatch.links import AgentLink
from bridgehead.control.store.nodes import NodeStore
from bridgehead.control.store.rows import JobRow

log = logging.getLogger("bridgehead.control.nodes")

HEARTBEAT_S = 1.0
FORGET_STOPPED_S = 86_400.0  # a stopped node's row is kept a day (GET /api/v1/nodes shows it)


class Host(Protocol):
    """What the coordinator needs of the dispatcher (the seam keeps it from importing it)."""

    links: dict[str, AgentLink]
    durability: Durability

    def dispatch(self, cluster: str) -> None: ...

    def claims_clusters(self) -> set[str]: ...

    def claims_dispatch_all(self) -> None: ...

    def ended_elsewhere(self, job_id: str) -> None: ...

    def cancel_asked(self, job_id: str) -> None: ...

    def agent_moved(self, name: str) -> None: ...

    def hold(self, jobs: list[JobRow], grace: bool) -> None: ...


class Coordinator:
    def __init__(self, dispatcher: Host, store: NodeStore, dead_after_s: float, url: str = "") -> None:
        self.dispatcher = dispatcher
        self.store = store
        self.dead_after_s = dead_after_s
        self.url = url
        self.started_at = time.time()
        self._loop_task: asyncio.Task[None] | None = None
        self._beats = 0
        self.queued = 0  # jobs queued in the database, as of the last beat (a metric)

    @property
    def node_id(self) -> str:
        return self.store.node_id

    async def start(self) -> None:
        self.store.on_signal(self._signals)
        await self.store.listening()
        await self.store.heartbeat(self.url, __version__, self.started_at, 0)
        self._loop_task = asyncio.create_task(self._membership_loop(), name="node membership")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        with contextlib.suppress(Exception):  # a store already failing: others see us silent instead
            await asyncio.wait_for(asyncio.ensure_future(self.store.node_stopped()), 5)

    # --- what other nodes say -----------------------------------------------------------------

    def _signals(self, tokens: list[str]) -> None:
        dispatcher = self.dispatcher
        clusters: set[str] = set()
        for token in tokens:
            kind, _, value = token.partition(":")
            if kind == "q":
                clusters.update([value] if value else dispatcher.claims_clusters())
            elif kind == "f":
                dispatcher.ended_elsewhere(value)
            elif kind == "c":
                dispatcher.cancel_asked(value)
            elif kind == "a":
                dispatcher.agent_moved(value)
        for cluster in clusters:
            dispatcher.dispatch(cluster)

    # --- membership ---------------------------------------------------------------------------

    async def _membership_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a store failure fail-stops through the writes
                log.error("node membership round failed: %s", exc)

    async def _beat(self) -> None:
        dispatcher = self.dispatcher
        beat = self.store.heartbeat(self.url, __version__, self.started_at, len(dispatcher.links))
        dispatcher.durability.after(beat)
        for node in await self.store.list_nodes():
            if node.id == self.node_id or node.running == 0:
                continue
            if node.stopped_at is not None or node.silent_s > self.dead_after_s:
                why = "stopped" if node.stopped_at is not None else f"silent for {node.silent_s:.1f} s"
                taken = await dispatcher.durability.after_value(self.store.take_over_node(node.id))
                if taken:
                    log.warning("node %s %s: took over its %d running attempt(s)", node.id, why, len(taken))
                    dispatcher.hold(taken, grace=True)
        dispatcher.claims_dispatch_all()
        self.queued = await self.store.queued_jobs()
        self._beats += 1
        if self._beats % 3600 == 0:
            await self.store.forget_nodes(FORGET_STOPPED_S)
