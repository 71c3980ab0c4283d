"""``/api/v1/nodes``: the control-plane nodes sharing the store (docs/operations.md#several-nodes)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from bridgehead.control.http.access import Access
from bridgehead.control.http.responses import json_response
from bridgehead.control.services.nodes import NodeService


class NodeRoutes:
    def __init__(self, access: Access, nodes: NodeService, url: Callable[[], str]) -> None:
        self.access = access
        self.nodes = nodes
        self.url = url  # this node's, for the one-node answer

    async def list(self, request: Request) -> Response:
        await self.access.authorize(request, "viewer")
        return json_response(await self.nodes.list(self.url()))
