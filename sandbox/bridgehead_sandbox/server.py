"""Dropping a connection on purpose, in a sandbox served by uvicorn.

Why uvicorn with Starlette (not aiohttp.web, where ``request.transport`` makes a drop a
one-liner): it is what the control plane serves with, so the sandbox shares its stack, its
process model and its SIGTERM handling (one start-up for both: ``bridgehead.core.serve``). ASGI
gives an app no handle on the socket, and an app that fails before it answers makes uvicorn
send a 500, which is an answer, not a drop. So the sandbox runs uvicorn's httptools protocol
through a subclass that only records each connection's transport by peer address (the address
uvicorn puts in ``scope["client"]``); a dropped request aborts its transport (the client sees a
reset or a closed connection and no status line) and then waits for uvicorn to notice the loss,
after which uvicorn sends nothing. The subclass overrides only
``connection_made``/``connection_lost``, the asyncio protocol interface, not uvicorn internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import MutableMapping
from typing import Any

from starlette.types import Receive
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("bridgehead.sandbox")
Peer = tuple[str, int]


def _peer(transport: asyncio.BaseTransport) -> Peer | None:
    info = transport.get_extra_info("peername")
    if isinstance(info, tuple | list) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


class Connections:
    """The open connections' transports, by peer address."""

    def __init__(self) -> None:
        self._by_peer: dict[Peer, asyncio.Transport] = {}

    def protocol_class(self) -> type[asyncio.Protocol]:
        connections = self

        class TrackedHttpToolsProtocol(HttpToolsProtocol):
            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override] # as uvicorn declares it
                self._bridgehead_peer = _peer(transport)
                if self._bridgehead_peer is not None:
                    connections._by_peer[self._bridgehead_peer] = transport
                super().connection_made(transport)

            def connection_lost(self, exc: Exception | None) -> None:
                if self._bridgehead_peer is not None:
                    connections._by_peer.pop(self._bridgehead_peer, None)
                super().connection_lost(exc)

        return TrackedHttpToolsProtocol

    def __len__(self) -> int:
        return len(self._by_peer)

    async def drop(self, scope: MutableMapping[str, Any], receive: Receive) -> bool:
        """Close the request's connection without an answer; False if it is not ours to close."""
        client = scope.get("client")
        transport = self._by_peer.get((str(client[0]), int(client[1]))) if client else None
        if transport is None:
            return False
        transport.abort()
        # Until uvicorn sees the connection lost it would answer 500 for an app that returns.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                while (await receive())["type"] != "http.disconnect":
                    pass
        return True
