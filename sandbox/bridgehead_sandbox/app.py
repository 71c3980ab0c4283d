"""Assembling the sandbox: its parts, the routes, and the layer every request goes through.

The outer ASGI layer (:class:`SandboxLayer`) does, in order, for each request:

1. count it (``/sandbox/stats``) and label the answer ``X-Bridgehead-Sandbox: stand-in``;
2. honour ``X-HTTP-Method-Override`` on a POST (SERVICENOW_API.md §0);
3. apply injected faults (latency, then a drop or a 5xx) to everything but ``/sandbox/``;
4. for ``/api/...``: authenticate (Basic or bearer; else 401) and apply the rate limit,
   whose headers it adds to the answer;
5. hand over to the Starlette routes; turn any exception into the instance's error envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridgehead_sandbox.admin_api import AdminApi
from bridgehead_sandbox.auth import Authenticator
from bridgehead_sandbox.batch_api import BatchApi
from bridgehead_sandbox.config import SandboxConfig
from bridgehead_sandbox.errors import SnError, unknown_uri
from bridgehead_sandbox.faults import Faults, Stats
from bridgehead_sandbox.import_api import ImportApi
from bridgehead_sandbox.imports import Importer
from bridgehead_sandbox.limits import RateLimiter, check_url_length
from bridgehead_sandbox.oauth_api import OAuthApi
from bridgehead_sandbox.quota import QuotaLayer
from bridgehead_sandbox.responses import STAND_IN_HEADER, error_response
from bridgehead_sandbox.schema import schema_for
from bridgehead_sandbox.server import Connections
from bridgehead_sandbox.sessions import SessionLayer, Sessions
from bridgehead_sandbox.store import Store
from bridgehead_sandbox.table_api import TableApi
from bridgehead_sandbox.transform import TransformMap

log = logging.getLogger("bridgehead.sandbox")
_STAND_IN = (STAND_IN_HEADER[0].lower().encode(), STAND_IN_HEADER[1].encode())


class Sandbox:
    """The app-long registry of the sandbox's parts."""

    def __init__(self, data_dir: Path, config: SandboxConfig) -> None:
        self.config = config
        self.store = Store(
            data_dir,
            synchronous=config.instance.synchronous,
            max_records=config.limits.max_records,
            schema=(lambda: schema_for(config)) if config.instance.schema == "strict" else None,
            case_sensitive=config.instance.case_sensitive,
        )
        self.auth = Authenticator(config, self.store)
        self.rate_limiter = RateLimiter(config.rate_limit)
        self.faults = Faults(config.faults)
        self.stats = Stats()
        maps = {staging: TransformMap.from_config(staging, tm) for staging, tm in config.transforms.items()}
        instance = config.instance
        self.importer = Importer(
            self.store,
            maps,
            default_mode="sync" if instance.insert_multiple == "sync" else "async",
            default_columns=instance.insert_multiple_columns,
            async_delay_s=instance.async_transform_delay_ms / 1000,
        )
        self.sessions = Sessions(config.sessions)
        self.connections = Connections()

    def close(self) -> None:
        self.store.close()


def endpoint_of(method: str, path: str) -> tuple[str, str]:
    """(what the stats call it, which API a rate-limit message names)."""
    parts = path.strip("/").split("/")
    if parts[:2] == ["api", "now"]:
        rest = parts[3:] if len(parts) > 2 and parts[2] in ("v1", "v2") else parts[2:]
        if rest and rest[0] == "table":
            return f"{method} table" + (".record" if len(rest) > 2 else ""), "Table API"
        if rest and rest[0] == "import":
            kind = ".insertMultiple" if rest[2:] == ["insertMultiple"] else ".record" if len(rest) > 2 else ""
            return f"{method} import{kind}", "Import Set API"
        if rest == ["batch"]:
            return f"{method} batch", "Batch API"
        return f"{method} other", "REST API"
    if path == "/oauth_token.do":
        return f"{method} oauth", ""
    if parts[0] == "sandbox":
        return f"{method} sandbox", ""
    return f"{method} other", ""


class SandboxLayer:
    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sandbox = self.sandbox
        scope = _method_override(scope)
        path: str = scope["path"]
        endpoint, api = endpoint_of(scope["method"], path)
        sandbox.stats.requests += 1
        sandbox.stats.by_endpoint[endpoint] += 1
        extra: list[tuple[bytes, bytes]] = [_STAND_IN]
        started = False

        async def send_labelled(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                sandbox.stats.by_status[message["status"]] += 1
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            if not path.startswith("/sandbox/"):
                check_url_length(scope, sandbox.config.limits.max_url_bytes)
                action = sandbox.faults.decide()
                if action.delay_s > 0:
                    await asyncio.sleep(action.delay_s)
                if action.kind == "drop" and await sandbox.connections.drop(scope, receive):
                    sandbox.stats.dropped += 1
                    return
                if action.kind != "pass":  # an error, or a drop on a connection that is not ours
                    status = action.status or 503
                    raise SnError(status, "Injected fault", f"bridgehead-sandbox answered {status} on purpose (faults)")
            if path.startswith("/api/"):
                principal = sandbox.auth.authenticate(_header(scope, b"authorization"))
                scope["sandbox.user"] = principal.name
                decision = sandbox.rate_limiter.check(principal.name)
                if decision is not None and not decision.allowed:
                    raise sandbox.rate_limiter.exceeded(decision, api)  # the error carries the headers
                if decision is not None:
                    extra += [(k.lower().encode(), v.encode()) for k, v in decision.headers.items()]
            await self.app(scope, receive, send_labelled)
        except SnError as exc:
            if not started:
                await error_response(exc)(scope, receive, send_labelled)
        except Exception:
            # Starlette has answered (its handler below) and re-raised; log it once, here.
            log.exception("unhandled error on %s %s", scope["method"], path)
            if not started:
                await error_response(SnError(500, "Internal error", "logged by the sandbox"))(
                    scope, receive, send_labelled
                )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _method_override(scope: Scope) -> Scope:
    if scope["method"] == "POST":
        override = _header(scope, b"x-http-method-override")
        if override and override.upper() in ("GET", "PUT", "PATCH", "DELETE", "HEAD"):
            return {**scope, "method": override.upper()}
    return scope


def build_app(sandbox: Sandbox) -> ASGIApp:
    table, imports, oauth, admin = TableApi(sandbox), ImportApi(sandbox), OAuthApi(sandbox), AdminApi(sandbox)

    async def sn_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, SnError):  # registered for SnError only
            return await unexpected(request, exc)
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):  # registered for HTTPException only
            return await unexpected(request, exc)
        if exc.status_code == 405:
            return error_response(SnError(405, "Method not Supported", f"{request.method} is not allowed here"))
        if exc.status_code == 404:
            return error_response(unknown_uri())
        return error_response(SnError(exc.status_code, str(exc.detail)))

    async def client_gone(request: Request, exc: Exception) -> Response:
        # The client hung up while sending its body: nobody will read this answer, and the
        # stats count it as 499 (nginx's "client closed request") rather than as a 500.
        return Response(status_code=499)

    async def unexpected(request: Request, exc: Exception) -> Response:
        return error_response(SnError(500, "Internal error", "logged by the sandbox"))

    routes: list[Route] = []
    for prefix in ("/api/now", "/api/now/v1", "/api/now/v2"):
        version: dict[str, Any] = {"version": prefix.rpartition("/")[2]} if prefix != "/api/now" else {}
        routes += [
            _route(f"{prefix}/table/{{table}}", table.list, ["GET"], version),
            _route(f"{prefix}/table/{{table}}", table.create, ["POST"], version),
            _route(f"{prefix}/table/{{table}}/{{sys_id}}", table.get, ["GET"], version),
            _route(f"{prefix}/table/{{table}}/{{sys_id}}", table.update, ["PUT", "PATCH"], version),
            _route(f"{prefix}/table/{{table}}/{{sys_id}}", table.delete, ["DELETE"], version),
            _route(f"{prefix}/import/{{table}}", imports.insert, ["POST"], version),
            _route(f"{prefix}/import/{{table}}/insertMultiple", imports.insert_multiple, ["POST"], version),
            _route(f"{prefix}/import/{{table}}/{{sys_id}}", imports.get_row, ["GET"], version),
        ]
    batch = BatchApi(sandbox)
    routes += [
        Route("/api/now/v1/batch", batch.batch, methods=["POST"]),
        Route("/api/now/batch", batch.batch, methods=["POST"]),
    ]
    routes += [
        Route("/oauth_token.do", oauth.token, methods=["POST"]),
        Route("/sandbox/health", admin.health, methods=["GET"]),
        Route("/sandbox/stats", admin.stats, methods=["GET"]),
        Route("/sandbox/faults", admin.get_faults, methods=["GET"]),
        Route("/sandbox/faults", admin.set_faults, methods=["POST"]),
        Route("/sandbox/faults", admin.clear_faults, methods=["DELETE"]),
        Route("/sandbox/rate_limit", admin.get_rate_limit, methods=["GET"]),
        Route("/sandbox/rate_limit", admin.set_rate_limit, methods=["POST"]),
        Route("/sandbox/reset", admin.reset, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sandbox.importer.start()  # and pick up import sets a restart interrupted
        try:
            yield
        finally:
            await sandbox.importer.close()
            sandbox.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            SnError: sn_error,
            HTTPException: http_error,
            ClientDisconnect: client_gone,
            Exception: unexpected,
        },
    )
    app.state.sandbox = sandbox
    # Outermost the session (its queue is not execution time), then the quota (which counts
    # injected latency), then the rest.
    layered = QuotaLayer(SandboxLayer(app, sandbox), sandbox.config.quota, sandbox.stats)
    return SessionLayer(layered, sandbox.sessions, sandbox.stats)


def _route(path: str, endpoint: Any, methods: list[str], version: dict[str, Any]) -> Route:
    if not version:
        return Route(path, endpoint, methods=methods)

    async def versioned(request: Request) -> Response:
        request.path_params.update(version)
        response: Response = await endpoint(request)
        return response

    return Route(path, versioned, methods=methods)
