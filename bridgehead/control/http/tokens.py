"""``/api/v1/whoami``, ``/api/v1/tokens`` and ``/api/v1/audit``: API tokens and the audit
log (admins), and who the caller is (anyone with a token)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bridgehead.control.auth import ROLES
from bridgehead.control.config import ControlConfig
from bridgehead.control.http.access import Access
from bridgehead.control.http.body import query_int, query_number, read_body
from bridgehead.control.http.responses import json_response
from bridgehead.control.services.requests import ApiTokenRequest
from bridgehead.control.services.tokens import TokenService


class TokenRoutes:
    def __init__(self, config: ControlConfig, access: Access, tokens: TokenService) -> None:
        self.config = config
        self.access = access
        self.tokens = tokens

    async def whoami(self, request: Request) -> Response:
        actor = await self.access.authorize(request, "viewer")
        return json_response({"role": actor.role, "token": actor.id, "name": actor.name, "roles": list(ROLES)})

    async def list(self, request: Request) -> Response:
        await self.access.authorize(request, "admin")
        return json_response(await self.tokens.list())

    async def create(self, request: Request) -> Response:
        actor = await self.access.authorize(request, "admin")
        body = await read_body(request, ApiTokenRequest, self.config.server.max_request_bytes)
        return json_response(await self.tokens.create(body, actor), 201)

    async def revoke(self, request: Request) -> Response:
        actor = await self.access.authorize(request, "admin")
        return json_response(await self.tokens.revoke(request.path_params["token_id"], actor))

    async def audit_log(self, request: Request) -> Response:
        """The audit log, oldest first: page with ``after`` (the ``next`` of the last page)."""
        await self.access.authorize(request, "admin")
        after = query_int(request, "after", 0, 0, 2**62)
        limit = query_int(request, "limit", 100, 1, 1000)
        query = request.query_params
        since = query_number(request, "since", 0, 0, 1e11) if "since" in query else None
        until = query_number(request, "until", 0, 0, 1e11) if "until" in query else None
        page = await self.tokens.audit_log(after, limit, query.get("actor"), query.get("action"), since, until)
        return json_response(page)
