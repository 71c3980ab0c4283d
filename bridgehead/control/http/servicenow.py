"""``/api/v1/servicenow/{name}/check``: the preflight of an instance (admin), the same rows as
``bridgehead-control servicenow check`` (``bridgehead.control.sinks.preflight``)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from bridgehead.control.config import ControlConfig
from bridgehead.control.errors import BadRequest
from bridgehead.control.http.access import Access
from bridgehead.control.http.body import read_body
from bridgehead.control.http.responses import json_response
from bridgehead.control.services.errors import NotFound
from bridgehead.control.sinks.auth import RefreshTokens
from bridgehead.control.sinks.preflight import CheckRequest, run_preflight
from bridgehead.control.sinks.spec import SinkSpec, parse_sink
from bridgehead.control.store.base import Store


class ServiceNowRoutes:
    def __init__(self, config: ControlConfig, access: Access, store: Store) -> None:
        self.config = config
        self.access = access
        self.store = store
        # The control plane's store: a refresh token the instance rotates during the check is
        # kept where the sink reads it, as when the sink itself refreshes.
        self.tokens: RefreshTokens = store

    async def check(self, request: Request) -> Response:
        """Connect as the sink would and report what to fix: 200 with {"ok", "checks"} whether
        or not the checks pass (admin: it uses the instance's credentials)."""
        actor = await self.access.authorize(request, "admin")
        name = request.path_params["name"]
        instance = self.config.servicenow.get(name)
        if instance is None:
            known = ", ".join(sorted(self.config.servicenow)) or "none"
            raise NotFound(f"no [servicenow.{name}] in the control plane's configuration (it has: {known})")
        body = CheckRequest()
        headers = request.headers
        if headers.get("content-length", "0") != "0" or "chunked" in headers.get("transfer-encoding", ""):
            body = await read_body(request, CheckRequest, self.config.server.max_request_bytes)
        spec = self._sink(name, body)
        result = await run_preflight(name, instance, spec, self.tokens)
        detail = {"instance": name, "ok": result.ok, "sink": body.sink is not None}
        await self.store.audit(actor, "servicenow.check", detail, time.time())
        return json_response(result)

    @staticmethod
    def _sink(name: str, body: CheckRequest) -> SinkSpec | None:
        if body.sink is None:
            return None
        raw = {"servicenow": name, **body.sink}
        try:
            spec = parse_sink(raw)
        except ValueError as exc:
            raise BadRequest(f"sink: {exc}", code="invalid_sink") from None
        if spec.servicenow != name:
            raise BadRequest(f"sink: names instance {spec.servicenow!r}, not {name!r}", code="invalid_sink")
        return spec
