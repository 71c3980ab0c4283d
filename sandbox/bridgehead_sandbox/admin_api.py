"""The sandbox's own endpoints, ``/sandbox/...``: not ServiceNow's, for tests and demos.

    GET    /sandbox/health        no auth; {"status": "ok", ...}: the sandbox is up
    GET    /sandbox/stats         request counts (all, by status, by endpoint, dropped), table sizes
    GET    /sandbox/faults        the faults in force
    POST   /sandbox/faults        change some: JSON with any [faults] keys; the others stay
    DELETE /sandbox/faults        no faults at all
    GET    /sandbox/rate_limit    the rate limit in force
    POST   /sandbox/rate_limit    change it: JSON with any [rate_limit] keys ({"requests": 0} = off)
    POST   /sandbox/reset         back to the config's faults and rate limit, stats zeroed;
                                  {"data": true} also deletes every table, {"tokens": true} every token

All but health need a user with the ``admin`` role (Basic or bearer). Faults and rate limits
never apply to these endpoints, so a test can always turn them off again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from bridgehead.core.tomlconfig import split_validation_error
from bridgehead_sandbox.config import FaultsSection, RateLimitSection
from bridgehead_sandbox.errors import SnError, bad_body, bad_request
from bridgehead_sandbox.responses import json_response, read_json

if TYPE_CHECKING:
    from bridgehead_sandbox.app import Sandbox

S = TypeVar("S", bound=msgspec.Struct)
STAND_IN = "bridgehead-sandbox: a stand-in for a ServiceNow instance, for demos and tests; not ServiceNow"


class AdminApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def _admin(self, request: Request) -> None:
        principal = self.sandbox.auth.authenticate(request.headers.get("authorization"))
        if not principal.is_admin:
            raise SnError(403, "Operation Failed", "the /sandbox endpoints need a user with the admin role")

    async def _changes(self, request: Request) -> dict[str, Any]:
        body = await read_json(request, 64 * 1024, 400)
        if not isinstance(body, dict):
            raise bad_body("The payload must be a JSON object of settings.")
        return body

    async def health(self, request: Request) -> Response:
        return json_response({"status": "ok", "stand_in": STAND_IN})

    async def stats(self, request: Request) -> Response:
        self._admin(request)
        sandbox = self.sandbox
        body = sandbox.stats.snapshot()
        body["tables"] = {name: len(table) for name, table in sorted(sandbox.store.tables.items())}
        body["records"] = sandbox.store.total
        body["open_connections"] = len(sandbox.connections)
        return json_response(body)

    async def get_faults(self, request: Request) -> Response:
        self._admin(request)
        return json_response(self.sandbox.faults.describe())

    async def set_faults(self, request: Request) -> Response:
        self._admin(request)
        faults = self.sandbox.faults
        faults.configure(_merge(faults.section, await self._changes(request), FaultsSection))
        return json_response(faults.describe())

    async def clear_faults(self, request: Request) -> Response:
        self._admin(request)
        self.sandbox.faults.configure(FaultsSection())
        return json_response(self.sandbox.faults.describe())

    async def get_rate_limit(self, request: Request) -> Response:
        self._admin(request)
        return json_response(msgspec.to_builtins(self.sandbox.rate_limiter.section))

    async def set_rate_limit(self, request: Request) -> Response:
        self._admin(request)
        limiter = self.sandbox.rate_limiter
        limiter.configure(_merge(limiter.section, await self._changes(request), RateLimitSection))
        return json_response(msgspec.to_builtins(limiter.section))

    async def reset(self, request: Request) -> Response:
        self._admin(request)
        raw = await request.body()
        options = await self._changes(request) if raw.strip() else {}
        unknown = set(options) - {"data", "tokens"}
        if unknown:
            raise bad_request("Invalid reset option", f"unknown key(s) {sorted(unknown)}; expected data, tokens")
        sandbox = self.sandbox
        sandbox.faults.configure(sandbox.config.faults)
        sandbox.rate_limiter.configure(sandbox.config.rate_limit)
        sandbox.stats.reset()
        if options.get("data") is True:
            sandbox.store.clear()
        if options.get("tokens") is True:
            sandbox.auth.forget_all()
        return json_response(
            {"reset": ["faults", "rate_limit", "stats"] + [k for k, v in options.items() if v is True]}
        )


def _merge(current: S, changes: dict[str, Any], kind: type[S]) -> S:
    try:
        return msgspec.convert({**msgspec.to_builtins(current), **changes}, kind, strict=True)
    except msgspec.ValidationError as exc:
        key, problem = split_validation_error(exc)
        raise bad_request("Invalid settings", f"{key}: {problem}" if key else problem) from None
