"""``/api/v1/schedules``: recurring runs of a job template (docs/schedules.md).

Viewers read; operators create, run, enable, disable and delete; each change is in the
audit log (``bridgehead.control.schedules.service`` does the work).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bridgehead.control.config import ControlConfig
from bridgehead.control.http.access import Access
from bridgehead.control.http.body import query_int, read_body
from bridgehead.control.http.responses import json_response
from bridgehead.control.schedules.models import ScheduleCreate, SchedulePatch
from bridgehead.control.schedules.service import ScheduleService


class ScheduleRoutes:
    def __init__(self, config: ControlConfig, access: Access, schedules: ScheduleService) -> None:
        self.config = config
        self.access = access
        self.schedules = schedules

    async def create(self, request: Request) -> Response:
        actor = await self.access.authorize(request, "operator")
        body = await read_body(request, ScheduleCreate, self.config.server.max_request_bytes)
        return json_response(await self.schedules.create(body, actor), 201)

    async def list(self, request: Request) -> Response:
        await self.access.authorize(request, "viewer")
        limit = query_int(request, "limit", 1000, 1, 1000)
        return json_response(await self.schedules.list(request.query_params.get("after", ""), limit))

    async def get(self, request: Request) -> Response:
        await self.access.authorize(request, "viewer")
        schedule = await self.schedules.get(request.path_params["name"])
        return json_response(await self.schedules.view(schedule))

    async def delete(self, request: Request) -> Response:
        """Delete a schedule; a run already started goes on as an ordinary job."""
        actor = await self.access.authorize(request, "operator")
        return json_response(await self.schedules.delete(request.path_params["name"], actor))

    async def patch(self, request: Request) -> Response:
        """Enable or disable (the only change a schedule takes)."""
        actor = await self.access.authorize(request, "operator")
        body = await read_body(request, SchedulePatch, self.config.server.max_request_bytes)
        return json_response(await self.schedules.set_enabled(request.path_params["name"], body.enabled, actor))

    async def run(self, request: Request) -> Response:
        """Run now, outside the timetable; 409 while the previous run is going."""
        actor = await self.access.authorize(request, "operator")
        return json_response(await self.schedules.run(request.path_params["name"], actor), 201)
