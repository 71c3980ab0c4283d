"""The node service: the control-plane nodes sharing the store, and how each is doing
(``GET /api/v1/nodes``). On SQLite there is one, this process."""

from __future__ import annotations

import time
from typing import Any

from bridgehead import __version__
from bridgehead.control.dispatch import Dispatcher
from bridgehead.control.services.shapes import Node
from bridgehead.control.store.base import Store
from bridgehead.control.store.nodes import NodeStore


class NodeService:
    def __init__(self, store: Store, dispatcher: Dispatcher, node_id: str, dead_after_s: float) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.node_id = node_id
        self.dead_after_s = dead_after_s
        self.started_at = time.time()

    async def list(self, url: str) -> dict[str, Any]:
        """Every node on record: ``alive`` unless it stopped or its heartbeat is older than
        ``node_dead_after_s``; ``running``: the attempts it holds; ``this``: the one answering."""
        if not isinstance(self.store, NodeStore):
            return {"nodes": [self._this(url)]}
        nodes = []
        for node in await self.store.list_nodes():
            alive = node.stopped_at is None and node.silent_s <= self.dead_after_s
            nodes.append(
                Node(
                    id=node.id,
                    url=node.url,
                    version=node.version,
                    alive=alive,
                    this=node.id == self.node_id,
                    started_at=node.started_at,
                    heartbeat_at=node.heartbeat_at,
                    silent_s=round(node.silent_s, 3),
                    stopped_at=node.stopped_at,
                    agents_connected=node.agents,
                    running=node.running,
                )
            )
        return {"nodes": nodes}

    def _this(self, url: str) -> Node:
        return Node(
            id=self.node_id,
            url=url,
            version=__version__,
            alive=True,
            this=True,
            started_at=self.started_at,
            heartbeat_at=time.time(),
            silent_s=0.0,
            stopped_at=None,
            agents_connected=len(self.dispatcher.links),
            running=len(self.dispatcher.live),
        )
