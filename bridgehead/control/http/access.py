"""Who is calling: the bearer token of a request, checked by the token service."""

from __future__ import annotations

import dataclasses

from starlette.requests import Request

from bridgehead.control.errors import Unauthorized
from bridgehead.control.services.tokens import TokenService
from bridgehead.control.store.rows import Actor


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


class Access:
    def __init__(self, tokens: TokenService) -> None:
        self.tokens = tokens

    async def authorize(self, request: Request, needed: str) -> Actor:
        """The token's holder, with the client's address (for the audit log), if its role
        allows ``needed``: 401 for no token (and, from the service, an unknown, revoked or
        expired one); 403 for too low a role."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send 'Authorization: Bearer <api token>' (bridgehead-control api-token create)")
        actor = await self.tokens.authorize(token.strip(), needed)
        return dataclasses.replace(actor, address=client_address(request))
