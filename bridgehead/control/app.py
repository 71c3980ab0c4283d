"""Assembling the control plane: store, dispatcher, API routes, agent gateway, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from bridgehead.agent.identity import make_private_tree
from bridgehead.control.api import Api, error_response, json_response
from bridgehead.control.config import ControlConfig
from bridgehead.control.dispatcher import Dispatcher
from bridgehead.control.errors import ApiError
from bridgehead.control.gateway import agent_endpoint
from bridgehead.control.metrics import Metrics
from bridgehead.control.openapi import openapi_document
from bridgehead.control.pki import Authority
from bridgehead.control.schedules.api import ScheduleApi
from bridgehead.control.schedules.scheduler import Scheduler
from bridgehead.control.schemas import SchemaRegistry
from bridgehead.control.signing_keys import SigningKeys
from bridgehead.control.sinks.runner import SinkRunner
from bridgehead.control.store.sqlite import SqliteStore
from bridgehead.control.tls import TlsSetup
from bridgehead.protocol.signing import OfferSigner

log = logging.getLogger("bridgehead.control")
DB_FILE = "control.db"


def open_store(data_dir: Path, config: ControlConfig) -> SqliteStore:
    # 0700/0600 whatever they were found with: the database holds records and OAuth refresh
    # tokens, tls/ and signing/ hold keys (before the database opens: its -wal and -shm take
    # its mode).
    make_private_tree(data_dir)
    return SqliteStore(data_dir / DB_FILE, synchronous=config.store.synchronous.upper())


class ControlPlane:
    """The app-long registry of the control plane's parts."""

    def __init__(self, data_dir: Path, config: ControlConfig, tls: TlsSetup | None = None) -> None:
        self.data_dir = data_dir
        self.config = config
        self.store = open_store(data_dir, config)
        self.authority = Authority(data_dir)
        self.signing_keys = SigningKeys(data_dir)
        # None: plain HTTP on loopback (--insecure-http); agents then prove their key only.
        self.tls = tls
        self.metrics = Metrics()
        self.dispatcher = Dispatcher(
            self.store,
            self.metrics,
            heartbeat_s=config.server.heartbeat_s,
            restart_grace_s=config.server.restart_grace_s,
            signer=OfferSigner(self.signing_keys.current, config.server.offer_ttl_s),
            max_credit=config.server.max_agent_credit,
        )
        self.sinks = SinkRunner(self.store, config, self.metrics)
        self.dispatcher.on_finished.append(self.sinks.job_finished)
        self.schemas = SchemaRegistry(config.server.max_schema_bytes, config.server.max_schemas)
        self.unauthenticated = 0  # agent connections still in their handshake (gateway)
        # Ids are a random per-process prefix and a counter: unique across restarts and
        # nodes, and without a system call per job (uuid4 reads os.urandom each time).
        self._id_prefix = secrets.token_hex(8)
        self._id_counter = itertools.count(1)

    @property
    def trust_anchor_pem(self) -> bytes:
        """What agents pin and verify this server with (served at ``GET /api/v1/ca``)."""
        return self.tls.trust_anchor_pem if self.tls is not None else self.authority.trust_anchor()

    def new_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):016x}"


REVOCATION_POLL_S = 1.0


async def watch_revocations(control: ControlPlane) -> None:
    """Disconnect agents revoked by the CLI (another process, writing the store directly)
    within a second; the API's DELETE disconnects at once."""
    since = time.time() - 1.0
    while True:
        await asyncio.sleep(REVOCATION_POLL_S)
        now = time.time()
        try:
            names = await control.store.revoked_agents(since - REVOCATION_POLL_S)
        except Exception:  # noqa: BLE001 - a busy database costs one poll, not the watcher
            log.exception("reading revoked agents failed")
            continue
        since = now
        for name in names:
            control.dispatcher.disconnect(name, "the agent's identity was revoked")


def build_app(control: ControlPlane) -> Starlette:
    api = Api(control)
    scheduler = Scheduler(control.store, api)
    schedules = ScheduleApi(api, scheduler)

    async def metrics(request: Request) -> Response:
        if not control.config.server.metrics_public:
            await api._authorize(request, "viewer")
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
        revocations = asyncio.create_task(watch_revocations(control), name="revocations")
        try:
            yield
        finally:
            revocations.cancel()
            await control.sinks.stop()
            await scheduler.stop()
            await control.dispatcher.stop()
            control.schemas.close()
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
        Route("/api/v1/agents/{name}", api.revoke_agent, methods=["DELETE"]),
        Route("/api/v1/ca", api.ca_certificate, methods=["GET"]),
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
        Route("/api/v1/tokens", api.list_tokens, methods=["GET"]),
        Route("/api/v1/tokens", api.create_token, methods=["POST"]),
        Route("/api/v1/tokens/{token_id}", api.revoke_token, methods=["DELETE"]),
        Route("/api/v1/audit", api.audit_log, methods=["GET"]),
        WebSocketRoute("/api/v1/agent/connect", agent_endpoint),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: unexpected},
    )
    app.state.control = control
    return app
