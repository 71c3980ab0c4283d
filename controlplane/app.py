"""Assembling the control plane: store, dispatcher, API routes, agent gateway, metrics."""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from controlplane.api import Api, error_response, json_response
from controlplane.config import ControlConfig
from controlplane.dispatcher import Dispatcher
from controlplane.errors import ApiError
from controlplane.gateway import agent_endpoint
from controlplane.metrics import Metrics
from controlplane.openapi import openapi_document
from controlplane.schedules.api import ScheduleApi
from controlplane.schedules.scheduler import Scheduler
from controlplane.sinks.runner import SinkRunner
from controlplane.store.sqlite import SqliteStore

log = logging.getLogger("bridgehead.control")
DB_FILE = "control.db"


def open_store(data_dir: Path, config: ControlConfig) -> SqliteStore:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SqliteStore(data_dir / DB_FILE, synchronous=config.store.synchronous.upper())


class ControlPlane:
    """The app-long registry of the control plane's parts."""

    def __init__(self, data_dir: Path, config: ControlConfig) -> None:
        self.data_dir = data_dir
        self.config = config
        self.store = open_store(data_dir, config)
        self.metrics = Metrics()
        self.dispatcher = Dispatcher(
            self.store,
            self.metrics,
            heartbeat_s=config.server.heartbeat_s,
            restart_grace_s=config.server.restart_grace_s,
        )
        self.sinks = SinkRunner(self.store, config, self.metrics)
        self.dispatcher.on_finished.append(self.sinks.job_finished)
        # agent name -> plugin name -> params JSON Schema, from each live agent's hello
        self.agent_schemas: dict[str, dict[str, dict[str, Any] | None]] = {}
        # Ids are a random per-process prefix and a counter: unique across restarts and
        # nodes, and without a system call per job (uuid4 reads os.urandom each time).
        self._id_prefix = secrets.token_hex(8)
        self._id_counter = itertools.count(1)

    def new_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):016x}"


def build_app(control: ControlPlane) -> Starlette:
    api = Api(control)
    scheduler = Scheduler(control.store, api)
    schedules = ScheduleApi(api, scheduler)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(control.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return json_response(openapi_document())

    async def api_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, ApiError):  # registered for ApiError only
            return await unexpected(request, exc)
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, HTTPException):  # registered for HTTPException only
            return await unexpected(request, exc)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return json_response({"error": {"code": code, "message": str(exc.detail)}}, exc.status_code)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return json_response({"error": {"code": "internal", "message": "internal error (logged)"}}, 500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await control.dispatcher.start()
        await scheduler.start()  # after the dispatcher: its first pass runs missed runs
        await control.sinks.start()
        try:
            yield
        finally:
            await control.sinks.stop()
            await scheduler.stop()
            await control.dispatcher.stop()
            await control.store.close()

    routes = [
        Route("/healthz", api.healthz),
        Route("/metrics", metrics),
        Route("/api/v1/openapi.json", openapi),
        Route("/api/v1/jobs", api.submit_job, methods=["POST"]),
        Route("/api/v1/jobs", api.list_jobs, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}", api.get_job, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}/records", api.job_records, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}/cancel", api.cancel_job, methods=["POST"]),
        Route("/api/v1/jobs/{job_id}/sync/errors", api.sync_errors, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}/sync/retry", api.retry_sync, methods=["POST"]),
        Route("/api/v1/agents", api.list_agents, methods=["GET"]),
        Route("/api/v1/syncs", api.list_syncs, methods=["GET"]),
        Route("/api/v1/syncs/{name}", api.delete_sync, methods=["DELETE"]),
        Route("/api/v1/enroll", api.enroll, methods=["POST"]),
        Route("/api/v1/enrollment-tokens", api.create_enrollment_token, methods=["POST"]),
        Route("/api/v1/schedules", schedules.create, methods=["POST"]),
        Route("/api/v1/schedules", schedules.list, methods=["GET"]),
        Route("/api/v1/schedules/{name}", schedules.get, methods=["GET"]),
        Route("/api/v1/schedules/{name}", schedules.patch, methods=["PATCH"]),
        Route("/api/v1/schedules/{name}", schedules.delete, methods=["DELETE"]),
        Route("/api/v1/schedules/{name}/run", schedules.run, methods=["POST"]),
        Route("/api/v1/whoami", api.roles, methods=["GET"]),
        WebSocketRoute("/api/v1/agent/connect", agent_endpoint),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: unexpected},
    )
    app.state.control = control
    return app
