"""Every route of the control plane's HTTP server, and the handlers they go to."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from bridgehead.control.gateway import agent_endpoint
from bridgehead.control.http.access import Access
from bridgehead.control.http.agents import AgentRoutes
from bridgehead.control.http.jobs import JobRoutes
from bridgehead.control.http.nodes import NodeRoutes
from bridgehead.control.http.releases import ReleaseRoutes
from bridgehead.control.http.responses import json_response
from bridgehead.control.http.schedules import ScheduleRoutes
from bridgehead.control.http.servicenow import ServiceNowRoutes
from bridgehead.control.http.tokens import TokenRoutes
from bridgehead.control.openapi import openapi_document
from bridgehead.control.plane import ControlPlane


def routes(control: ControlPlane) -> list[BaseRoute]:
    config = control.config
    access = Access(control.tokens)
    jobs = JobRoutes(config, access, control.jobs, control.syncs)
    agents = AgentRoutes(config, access, control.agents, lambda: len(control.dispatcher.links))
    tokens = TokenRoutes(config, access, control.tokens)
    schedules = ScheduleRoutes(config, access, control.schedules)
    servicenow = ServiceNowRoutes(config, access, control.store)
    releases = ReleaseRoutes(config, access, control.releases)
    nodes = NodeRoutes(access, control.nodes, lambda: control.node_url)

    async def metrics(request: Request) -> Response:
        if not config.server.metrics_public:
            await access.authorize(request, "viewer")
        return Response(generate_latest(control.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return json_response(openapi_document())

    return [
        Route("/healthz", agents.healthz),
        Route("/metrics", metrics),
        Route("/api/v1/openapi.json", openapi),
        Route("/api/v1/jobs", jobs.submit, methods=["POST"]),
        Route("/api/v1/jobs", jobs.list, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}", jobs.get, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}/records", jobs.records, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}/cancel", jobs.cancel, methods=["POST"]),
        Route("/api/v1/jobs/{job_id}/sync/errors", jobs.sync_errors, methods=["GET"]),
        Route("/api/v1/jobs/{job_id}/sync/retry", jobs.retry_sync, methods=["POST"]),
        Route("/api/v1/agents", agents.list, methods=["GET"]),
        Route("/api/v1/nodes", nodes.list, methods=["GET"]),
        Route("/api/v1/agents/{name}", agents.revoke, methods=["DELETE"]),
        Route("/api/v1/ca", agents.ca_certificate, methods=["GET"]),
        Route("/api/v1/syncs", jobs.list_syncs, methods=["GET"]),
        Route("/api/v1/syncs/{name}", jobs.delete_sync, methods=["DELETE"]),
        Route("/api/v1/enroll", agents.enroll, methods=["POST"]),
        Route("/api/v1/enrollment-tokens", agents.create_enrollment_token, methods=["POST"]),
        Route("/api/v1/schedules", schedules.create, methods=["POST"]),
        Route("/api/v1/schedules", schedules.list, methods=["GET"]),
        Route("/api/v1/schedules/{name}", schedules.get, methods=["GET"]),
        Route("/api/v1/schedules/{name}", schedules.patch, methods=["PATCH"]),
        Route("/api/v1/schedules/{name}", schedules.delete, methods=["DELETE"]),
        Route("/api/v1/schedules/{name}/run", schedules.run, methods=["POST"]),
        Route("/api/v1/servicenow/{name}/check", servicenow.check, methods=["POST"]),
        Route("/api/v1/releases", releases.upload, methods=["POST"]),
        Route("/api/v1/releases", releases.list, methods=["GET"]),
        Route("/api/v1/clusters/{cluster}/release", releases.get_cluster, methods=["GET"]),
        Route("/api/v1/clusters/{cluster}/release", releases.set_cluster, methods=["PUT"]),
        Route("/api/v1/whoami", tokens.whoami, methods=["GET"]),
        Route("/api/v1/tokens", tokens.list, methods=["GET"]),
        Route("/api/v1/tokens", tokens.create, methods=["POST"]),
        Route("/api/v1/tokens/{token_id}", tokens.revoke, methods=["DELETE"]),
        Route("/api/v1/audit", tokens.audit_log, methods=["GET"]),
        WebSocketRoute("/api/v1/agent/connect", agent_endpoint),
    ]
