"""``/api/v1/schedules``: recurring runs of a job template (docs/schedules.md).

Everything is checked when a schedule is created (name, cron, time zone, and the job
template through the same checks as ``POST /api/v1/jobs``), so a schedule that was accepted
does not fail on its first run for a reason that could have been seen then. Viewers read;
operators create, run, enable, disable and delete; each change is in the audit log.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from bridgehead.control.api import Api, JobSubmit, job_view, json_response
from bridgehead.control.errors import ApiError, BadRequest, Conflict, NotFound
from bridgehead.control.schedules.scheduler import Scheduler, following
from bridgehead.control.schedules.times import ScheduleSpecError, check_cron, utc_iso, zone
from bridgehead.control.store.base import ScheduleRow, json_size

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ScheduleName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]


class ScheduleCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /api/v1/schedules``."""

    name: ScheduleName
    cron: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"
    # Exactly a POST /api/v1/jobs body, less idempotency_key (each run gets its own).
    job: JobSubmit
    enabled: bool = True


class SchedulePatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``PATCH /api/v1/schedules/{name}``: to change anything else, delete and create."""

    enabled: bool


class ScheduleError(msgspec.Struct):
    code: str
    message: str


class Schedule(msgspec.Struct):
    """The API's view of a schedule; times are ISO 8601, ``*_local`` in its time zone."""

    name: str
    cron: str
    timezone: str
    enabled: bool
    job: dict[str, Any]
    next_run_at: str | None
    next_run_at_local: str | None
    last_run_at: str | None
    last_job_id: str | None
    last_job_state: str | None
    runs: int
    skipped_overlaps: int
    last_error: ScheduleError | None
    created_at: str


def _utc(epoch: float | None) -> str | None:
    return None if epoch is None else utc_iso(datetime.fromtimestamp(epoch, UTC))


def _local(schedule: ScheduleRow) -> str | None:
    if schedule.next_run_at is None:
        return None
    try:
        return datetime.fromtimestamp(schedule.next_run_at, zone(schedule.timezone)).isoformat()
    except ScheduleSpecError:  # its zone left the system's database since; the UTC time stands
        return None


class ScheduleApi:
    def __init__(self, api: Api, scheduler: Scheduler) -> None:
        self.api = api
        self.store = api.store
        self.scheduler = scheduler

    async def _view(self, schedule: ScheduleRow) -> Schedule:
        job = await self.store.get_job(schedule.last_job_id) if schedule.last_job_id else None
        error = schedule.last_error_code
        return Schedule(
            name=schedule.name,
            cron=schedule.cron,
            timezone=schedule.timezone,
            enabled=schedule.enabled,
            job=schedule.job,
            next_run_at=_utc(schedule.next_run_at),
            next_run_at_local=_local(schedule),
            last_run_at=_utc(schedule.last_run_at),
            last_job_id=schedule.last_job_id,
            last_job_state=job.state if job else None,
            runs=schedule.runs,
            skipped_overlaps=schedule.skipped_overlaps,
            last_error=ScheduleError(error, schedule.last_error_message or "") if error else None,
            created_at=_utc(schedule.created_at) or "",
        )

    async def _schedule(self, request: Request) -> ScheduleRow:
        name = request.path_params["name"]
        schedule = await self.store.get_schedule(name) if len(name) <= 128 else None
        if schedule is None:
            raise NotFound(f"no schedule {name!r}", code="schedule_not_found")
        return schedule

    def _check(self, body: ScheduleCreate) -> ScheduleRow:
        """The row to store for ``body``, or ``BadRequest`` saying what is wrong."""
        if body.job.idempotency_key is not None:
            raise BadRequest(
                "job.idempotency_key: not allowed in a schedule's job; each run gets "
                f"'schedule:{body.name}:<occurrence time>'"
            )
        try:
            cron = check_cron(body.cron)
            zone(body.timezone)
        except ScheduleSpecError as exc:
            raise BadRequest(exc.message, code=f"invalid_{exc.field}") from None
        try:
            self.api.validate_submit(body.job)
        except ApiError as exc:
            raise ApiError(f"job: {exc.message}", code=exc.code, status=exc.status) from None
        template = msgspec.to_builtins(body.job)
        del template["idempotency_key"]
        now = time.time()
        schedule = ScheduleRow(
            name=body.name, cron=cron, timezone=body.timezone, job=template, enabled=body.enabled, created_at=now
        )
        try:
            first = following(schedule, now)
        except ScheduleSpecError as exc:
            raise BadRequest(exc.message, code=f"invalid_{exc.field}") from None
        schedule.next_run_at = first if body.enabled else None
        return schedule

    async def create(self, request: Request) -> Response:
        role = await self.api._authorize(request, "operator")
        body: ScheduleCreate = await self.api._body(request, ScheduleCreate)
        schedule = self._check(body)
        limit = self.api.control.config.schedules.max_schedules
        outcome = await self.store.add_schedule(schedule, limit)
        if outcome == "exists":
            raise Conflict(f"a schedule named {body.name!r} exists; delete it first", code="schedule_exists")
        if outcome == "full":
            raise Conflict(
                f"there are {limit} schedules, the limit (schedules.max_schedules); delete one first",
                code="too_many_schedules",
            )
        await self.store.audit(
            role,
            "schedule.create",
            {"schedule": schedule.name, "cron": schedule.cron, "timezone": schedule.timezone, "job": schedule.job},
            schedule.created_at,
        )
        self.scheduler.wake()
        return json_response(await self._view(schedule), 201)

    async def list(self, request: Request) -> Response:
        await self.api._authorize(request, "viewer")
        limit = int(self.api._number(request, "limit", 1000, 1, 1000))
        max_bytes = self.api.control.config.server.max_page_bytes
        after = request.query_params.get("after", "")
        schedules = await self.store.list_schedules(after, limit, max_bytes)
        size = sum(json_size(s.job) for s in schedules)
        more = bool(schedules) and (len(schedules) == limit or size >= max_bytes)
        # ``next``: pass it as ``after`` for the following page (None: this was the last).
        return json_response(
            {"schedules": [await self._view(s) for s in schedules], "next": schedules[-1].name if more else None}
        )

    async def get(self, request: Request) -> Response:
        await self.api._authorize(request, "viewer")
        return json_response(await self._view(await self._schedule(request)))

    async def delete(self, request: Request) -> Response:
        """Delete a schedule; a run already started goes on as an ordinary job."""
        role = await self.api._authorize(request, "operator")
        async with self.scheduler.lock:
            schedule = await self._schedule(request)
            await self.store.delete_schedule(schedule.name)
            await self.store.audit(role, "schedule.delete", {"schedule": schedule.name}, time.time())
        self.scheduler.wake()
        return json_response({"name": schedule.name, "deleted": True})

    async def patch(self, request: Request) -> Response:
        """Enable or disable. Enabling plans the next occurrence after now: the ones that
        fell while it was disabled are not missed runs, and do not run."""
        role = await self.api._authorize(request, "operator")
        body: SchedulePatch = await self.api._body(request, SchedulePatch)
        async with self.scheduler.lock:
            schedule = await self._schedule(request)
            if schedule.enabled != body.enabled:
                now = time.time()
                schedule.enabled = body.enabled
                try:
                    schedule.next_run_at = following(schedule, now) if body.enabled else None
                except ScheduleSpecError as exc:  # its zone left the system's database since
                    raise Conflict(f"schedule {schedule.name!r}: {exc.message}", code="invalid_schedule") from None
                await self.store.set_schedule_enabled(schedule.name, body.enabled, schedule.next_run_at)
                action = "schedule.enable" if body.enabled else "schedule.disable"
                await self.store.audit(role, action, {"schedule": schedule.name}, now)
        self.scheduler.wake()
        return json_response(await self._view(schedule))

    async def run(self, request: Request) -> Response:
        """Run now, outside the timetable; 409 while the previous run is going."""
        role = await self.api._authorize(request, "operator")
        name = request.path_params["name"]
        if len(name) > 128:
            raise NotFound(f"no schedule {name!r}", code="schedule_not_found")
        job = await self.scheduler.run_now(name)
        await self.store.audit(role, "schedule.run", {"schedule": name, "job": job.id}, time.time())
        return json_response(job_view(job), 201)
