"""``/api/v1/jobs`` and ``/api/v1/syncs``: submit, view, wait for, list, page the records of
and cancel jobs; their deliveries to sinks and the kept state of named syncs.

Records are served as the raw JSON the agent sent, spliced into the page without being
parsed again.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bridgehead.control.config import ControlConfig
from bridgehead.control.http.access import Access
from bridgehead.control.http.body import query_int, query_number, read_body
from bridgehead.control.http.responses import json_response
from bridgehead.control.services.jobs import JobService
from bridgehead.control.services.requests import JobSubmit
from bridgehead.control.services.syncs import SyncService
from bridgehead.control.store.rows import JobRow


class JobRoutes:
    def __init__(self, config: ControlConfig, access: Access, jobs: JobService, syncs: SyncService) -> None:
        self.config = config
        self.access = access
        self.jobs = jobs
        self.syncs = syncs

    def _wait(self, request: Request) -> float:
        return query_number(request, "wait", 0.0, 0.0, self.config.server.max_wait_s)

    async def _job(self, request: Request) -> JobRow:
        return await self.jobs.get(request.path_params["job_id"])

    async def submit(self, request: Request) -> Response:
        actor = await self.access.authorize(request, "operator")
        submit = await read_body(request, JobSubmit, self.config.server.max_request_bytes)
        stored, created = await self.jobs.submit(submit, actor)
        view = await self.jobs.view(stored, self._wait(request))
        return json_response(view, 201 if created else 200)

    async def list(self, request: Request) -> Response:
        await self.access.authorize(request, "viewer")
        query = request.query_params
        state = query.get("state")
        self.jobs.check_state(state)
        limit = query_int(request, "limit", 100, 1, 1000)
        return json_response(await self.jobs.list(state, query.get("cluster"), limit, query.get("before")))

    async def get(self, request: Request) -> Response:
        await self.access.authorize(request, "viewer")
        job = await self._job(request)
        return json_response(await self.jobs.view(job, self._wait(request)))

    async def records(self, request: Request) -> Response:
        await self.access.authorize(request, "viewer")
        job = await self._job(request)
        after = query_int(request, "after", 0, 0, 2**62)
        limit = query_int(request, "limit", 1000, 1, 10_000)
        page = await self.jobs.records(job, after, limit)
        body = b'{"records":[' + b",".join(page.records) + b'],"next":'
        body += str(page.next).encode() if page.next is not None else b"null"
        body += b',"attempt":' + str(page.attempt).encode() + b"}"
        return Response(body, media_type="application/json")

    async def cancel(self, request: Request) -> Response:
        actor = await self.access.authorize(request, "operator")
        return json_response(await self.jobs.cancel(request.path_params["job_id"], actor))

    async def sync_errors(self, request: Request) -> Response:
        """Records the instance rejected, with its message, in record order."""
        await self.access.authorize(request, "viewer")
        job = await self._job(request)
        self.syncs.check_sink(job)
        after = query_int(request, "after", 0, 0, 2**62)
        limit = query_int(request, "limit", 100, 1, 1000)
        return json_response(await self.syncs.errors(job, after, limit))

    async def retry_sync(self, request: Request) -> Response:
        """Resume a failed delivery from its cursor, so nothing delivered is sent again."""
        actor = await self.access.authorize(request, "operator")
        job = await self._job(request)
        await self.syncs.retry(job, actor)
        return json_response(await self.jobs.view(job, self._wait(request)), 202)

    async def list_syncs(self, request: Request) -> Response:
        """The kept state of every named sync: where its next run starts from."""
        await self.access.authorize(request, "viewer")
        limit = query_int(request, "limit", 1000, 1, 1000)
        return json_response(await self.syncs.states(request.query_params.get("after", ""), limit))

    async def delete_sync(self, request: Request) -> Response:
        """Forget a sync's state (admin): its next run returns every entry again."""
        actor = await self.access.authorize(request, "admin")
        return json_response(await self.syncs.forget(request.path_params["name"], actor))
