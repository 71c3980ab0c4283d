"""``/api/v1/agents``, ``/api/v1/enroll``, ``/api/v1/enrollment-tokens``, ``/api/v1/ca`` and
``/healthz``: enrolled agents and how they join."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from bridgehead.control.config import ControlConfig
from bridgehead.control.http.access import Access, client_address
from bridgehead.control.http.body import query_int, read_body
from bridgehead.control.http.responses import json_response
from bridgehead.control.services.agents import AgentService
from bridgehead.control.services.requests import EnrollmentTokenRequest, EnrollRequest


class AgentRoutes:
    def __init__(
        self, config: ControlConfig, access: Access, agents: AgentService, connected: Callable[[], int]
    ) -> None:
        self.config = config
        self.access = access
        self.agents = agents
        self.connected = connected  # how many agents have a live session

    async def list(self, request: Request) -> Response:
        await self.access.authorize(request, "viewer")
        # A full page (``limit`` agents, by name) may have more: ask again with after=<last name>.
        limit = query_int(request, "limit", 1000, 1, 1000)
        return json_response(await self.agents.list(request.query_params.get("after", ""), limit))

    async def revoke(self, request: Request) -> Response:
        """Refuse an agent from now on and end its session at once (it may be enrolled again)."""
        actor = await self.access.authorize(request, "admin")
        return json_response(await self.agents.revoke(request.path_params["name"], actor))

    async def ca_certificate(self, request: Request) -> Response:
        """The certificate agents and API clients trust this server with (PEM; public).
        An agent enrolling compares its SHA-256 with the pin in its token before using it."""
        return Response(self.agents.trust_anchor(), media_type="application/x-pem-file")

    async def enroll(self, request: Request) -> Response:
        """Authenticated by the one-time token in the body, not by a bearer token."""
        body = await read_body(request, EnrollRequest, self.config.server.max_request_bytes)
        return json_response(await self.agents.enroll(body, client_address(request)), 201)

    async def create_enrollment_token(self, request: Request) -> Response:
        actor = await self.access.authorize(request, "admin")
        body = await read_body(request, EnrollmentTokenRequest, self.config.server.max_request_bytes)
        return json_response(await self.agents.create_enrollment_token(body, actor), 201)

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok", "agents_connected": self.connected()})
