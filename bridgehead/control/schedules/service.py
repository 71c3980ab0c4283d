"""The schedule service: create (every check made up front), view, list, enable or
disable, delete and run schedules now; each change is audited.

Everything is checked when a schedule is created (name, cron, time zone, and the job
template through the same checks as a submitted job), so a schedule that was accepted does
not fail on its first run for a reason that could have been seen then.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from bridgehead.control.config import ControlConfig
from bridgehead.control.schedules import clock
from bridgehead.control.schedules.models import MAX_NAME, Schedule, ScheduleCreate, ScheduleError
from bridgehead.control.schedules.scheduler import Scheduler, following
from bridgehead.control.schedules.times import ScheduleSpecError, check_cron, utc_iso, zone
from bridgehead.control.services.errors import Conflict, Invalid, NotFound, ServiceError
from bridgehead.control.services.jobs import JobService
from bridgehead.control.services.views import job_view
from bridgehead.control.store.base import Store
from bridgehead.control.store.rows import Actor, ScheduleRow, json_size


def _utc(epoch: float | None) -> str | None:
    return None if epoch is None else utc_iso(datetime.fromtimestamp(epoch, UTC))


def _local(schedule: ScheduleRow) -> str | None:
    if schedule.next_run_at is None:
        return None
    try:
        return datetime.fromtimestamp(schedule.next_run_at, zone(schedule.timezone)).isoformat()
    except ScheduleSpecError:  # its zone left the system's database since; the UTC time stands
        return None


class ScheduleService:
    def __init__(self, config: ControlConfig, store: Store, jobs: JobService, scheduler: Scheduler) -> None:
        self.config = config
        self.store = store
        self.jobs = jobs
        self.scheduler = scheduler

    async def view(self, schedule: ScheduleRow) -> Schedule:
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

    async def get(self, name: str) -> ScheduleRow:
        schedule = await self.store.get_schedule(name) if len(name) <= MAX_NAME else None
        if schedule is None:
            raise NotFound(f"no schedule {name!r}", code="schedule_not_found")
        return schedule

    def _check(self, body: ScheduleCreate) -> ScheduleRow:
        """The row to store for ``body``, or ``Invalid`` saying what is wrong."""
        if body.job.idempotency_key is not None:
            raise Invalid(
                "job.idempotency_key: not allowed in a schedule's job; each run gets "
                f"'schedule:{body.name}:<occurrence time>'"
            )
        try:
            cron = check_cron(body.cron)
            zone(body.timezone)
        except ScheduleSpecError as exc:
            raise Invalid(exc.message, code=f"invalid_{exc.field}") from None
        try:
            self.jobs.validate(body.job)
        except ServiceError as exc:
            raise exc.prefixed("job: ") from None
        template = msgspec.to_builtins(body.job)
        del template["idempotency_key"]
        now = clock.now()
        schedule = ScheduleRow(
            name=body.name, cron=cron, timezone=body.timezone, job=template, enabled=body.enabled, created_at=now
        )
        try:
            first = following(schedule, now)
        except ScheduleSpecError as exc:
            raise Invalid(exc.message, code=f"invalid_{exc.field}") from None
        schedule.next_run_at = first if body.enabled else None
        return schedule

    async def create(self, body: ScheduleCreate, actor: Actor) -> Schedule:
        schedule = self._check(body)
        limit = self.config.schedules.max_schedules
        outcome = await self.store.add_schedule(schedule, limit)
        if outcome == "exists":
            raise Conflict(f"a schedule named {body.name!r} exists; delete it first", code="schedule_exists")
        if outcome == "full":
            raise Conflict(
                f"there are {limit} schedules, the limit (schedules.max_schedules); delete one first",
                code="too_many_schedules",
            )
        await self.store.audit(
            actor,
            "schedule.create",
            {"schedule": schedule.name, "cron": schedule.cron, "timezone": schedule.timezone, "job": schedule.job},
            schedule.created_at,
        )
        self.scheduler.wake()
        return await self.view(schedule)

    async def list(self, after: str, limit: int) -> dict[str, Any]:
        """By name: at most ``limit``, and about ``server.max_page_bytes`` of job templates."""
        max_bytes = self.config.server.max_page_bytes
        schedules = await self.store.list_schedules(after, limit, max_bytes)
        size = sum(json_size(s.job) for s in schedules)
        more = bool(schedules) and (len(schedules) == limit or size >= max_bytes)
        # ``next``: pass it as ``after`` for the following page (None: this was the last).
        return {"schedules": [await self.view(s) for s in schedules], "next": schedules[-1].name if more else None}

    async def delete(self, name: str, actor: Actor) -> dict[str, Any]:
        """Delete a schedule; a run already started goes on as an ordinary job."""
        async with self.scheduler.lock:
            schedule = await self.get(name)
            await self.store.delete_schedule(schedule.name)
            await self.store.audit(actor, "schedule.delete", {"schedule": schedule.name}, time.time())
        self.scheduler.wake()
        return {"name": schedule.name, "deleted": True}

    async def set_enabled(self, name: str, enabled: bool, actor: Actor) -> Schedule:
        """Enable or disable. Enabling plans the next occurrence after now: the ones that
        fell while it was disabled are not missed runs, and do not run."""
        async with self.scheduler.lock:
            schedule = await self.get(name)
            if schedule.enabled != enabled:
                now = clock.now()
                schedule.enabled = enabled
                try:
                    schedule.next_run_at = following(schedule, now) if enabled else None
                except ScheduleSpecError as exc:  # its zone left the system's database since
                    raise Conflict(f"schedule {schedule.name!r}: {exc.message}", code="invalid_schedule") from None
                await self.store.set_schedule_enabled(schedule.name, enabled, schedule.next_run_at)
                action = "schedule.enable" if enabled else "schedule.disable"
                await self.store.audit(actor, action, {"schedule": schedule.name}, now)
        self.scheduler.wake()
        return await self.view(schedule)

    async def run(self, name: str, actor: Actor) -> dict[str, Any]:
        """Run now, outside the timetable; ``Conflict`` while the previous run is going."""
        if len(name) > MAX_NAME:
            raise NotFound(f"no schedule {name!r}", code="schedule_not_found")
        job = await self.scheduler.run_now(name)
        await self.store.audit(actor, "schedule.run", {"schedule": name, "job": job.id}, time.time())
        return job_view(job)
