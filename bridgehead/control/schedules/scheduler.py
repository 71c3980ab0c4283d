"""The scheduler: starts each schedule's runs as jobs, one at a time per schedule.

It sleeps until the earliest ``next_run_at`` of the enabled schedules (or until a schedule
changes), then handles every schedule that is due:

* **No overlap.** If the job of the schedule's previous run has not ended, or its sink
  delivery has not finished, this occurrence is skipped and counted (``skipped_overlaps``).
* **Missed runs run once.** A ``next_run_at`` in the past (the control plane was down) is
  handled like any due occurrence, once; the next one is then the first after *now*, so a
  day of downtime does not make 288 runs of a 5-minute schedule.
* **One job per occurrence.** The job's idempotency key is ``schedule:{name}:{occurrence}``
  (UTC, e.g. ``schedule:nightly:2025-01-31T23:05:00Z``). The job is stored before the run is
  recorded; after a crash between the two, the occurrence is still due and runs again, and
  the store hands back the job it already made instead of a second one.

One lock serialises every run and every change of a schedule (run, enable, disable and
delete in ``schedules.service`` take it too), so the "previous run still going?" check and
the job it allows cannot interleave with another's. Jobs are made through the job service,
with the same checks as any submission; a refusal is recorded as the run's error.

**Several nodes.** Control planes sharing a PostgreSQL database each run a scheduler, and an
occurrence is handled once among them: a node claims it in the store first (the others,
finding it claimed, leave it), and records it only while it is still the schedule's next
occurrence, so ``runs`` and ``skipped_overlaps`` count it once. A node that dies holding a
claim holds it for CLAIM_S; another then handles the occurrence, and the idempotency key
hands back any job already made. A schedule created, changed or deleted on another node is
seen within CHANGES_POLL_S (the store counts other processes' commits: ``external_changes``),
and every pass reads the schedules afresh, so a disabled or deleted one is never fired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from datetime import UTC, datetime

import msgspec

from bridgehead.control.schedules import clock
from bridgehead.control.schedules.times import ScheduleSpecError, next_occurrence, utc_iso, zone
from bridgehead.control.services.errors import Conflict, NotFound, ServiceError
from bridgehead.control.services.jobs import JobService
from bridgehead.control.services.requests import JobSubmit
from bridgehead.control.store.base import Store
from bridgehead.control.store.rows import JobRow, ScheduleRow

log = logging.getLogger("bridgehead.control.schedules")

# The longest sleep between looks at the store, whatever is due: bounds how late a run can
# be after the wall clock is set forward (sleeps are measured on the monotonic clock).
MAX_SLEEP_S = 30.0
# After an unexpected failure of the loop, wait this long rather than spinning on it.
ERROR_BACKOFF_S = 5.0
# How often a sleeping scheduler looks whether another process changed the store (a schedule
# created or changed on another node): a counter read, no query, unless it moved.
CHANGES_POLL_S = 1.0
# How long a node's claim on an occurrence keeps the other nodes off it: far longer than the
# handling takes (a job submission), and the longest an occurrence waits when its node dies.
CLAIM_S = 15.0


def occurrence_key(name: str, occurrence: float) -> str:
    return f"schedule:{name}:{utc_iso(datetime.fromtimestamp(occurrence, UTC))}"


def following(schedule: ScheduleRow, after: float) -> float:
    """The schedule's first occurrence strictly after ``after`` (epoch seconds)."""
    moment = next_occurrence(schedule.cron, zone(schedule.timezone), datetime.fromtimestamp(after, UTC))
    return moment.timestamp()


class Scheduler:
    def __init__(self, store: Store, jobs: JobService, node: str | None = None) -> None:
        """``node``: this control plane's name among those sharing the database (claims of
        occurrences are held in it; a random one per process if None)."""
        self.store = store
        self.jobs = jobs
        self.node = node or f"scheduler-{secrets.token_hex(4)}"
        self.lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        """A schedule changed: look at the store again now rather than at the planned time."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            # Cleared before reading the store, so a change made meanwhile is not slept through.
            self._wake.clear()
            try:
                delay = await self.run_due(clock.now())
            except Exception:  # noqa: BLE001 - the loop outlives a failed pass; the error is logged
                log.exception("scheduler: a pass failed; trying again in %g s", ERROR_BACKOFF_S)
                delay = ERROR_BACKOFF_S
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        """``delay`` seconds, or less: a local change (``wake``) or another process's commit."""
        deadline = time.monotonic() + delay
        seen = self.store.external_changes()
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(left, CHANGES_POLL_S))
                return
            if self.store.external_changes() != seen:
                return

    async def run_due(self, now: float) -> float:
        """Handle every schedule due at ``now``; seconds until the next one is due."""
        async with self.lock:
            for schedule in await self.store.due_schedules(now):
                await self._occurrence(schedule, now)
            next_at = await self.store.next_schedule_at()
        if next_at is None:
            return MAX_SLEEP_S
        return min(max(next_at - clock.now(), 0.0), MAX_SLEEP_S)

    async def _occurrence(self, schedule: ScheduleRow, now: float) -> None:
        assert schedule.next_run_at is not None  # noqa: S101 - due_schedules selects only these
        occurrence = schedule.next_run_at
        if not await self.store.claim_schedule(schedule.name, occurrence, self.node, now, now + CLAIM_S):
            return  # another node handles it (or did: the occurrence is recorded)
        try:
            next_at: float | None = following(schedule, max(occurrence, now))
        except ScheduleSpecError as exc:
            # Only if the zone vanished from the system's database since creation: stop the
            # schedule (next_run_at None) and say why, rather than failing every pass.
            log.error("schedule %r: %s; it will not run again until it is re-created", schedule.name, exc.message)
            error = ("invalid_schedule", exc.message)
            await self.store.record_schedule_skip(schedule.name, None, False, error, occurrence)
            return
        if now - occurrence > 60:
            log.info("schedule %r: the run due at %s was missed; running it once now", schedule.name, _iso(occurrence))
        busy = await self.previous_run_busy(schedule)
        if busy is not None:
            log.warning("schedule %r: run due at %s skipped: %s", schedule.name, _iso(occurrence), busy)
            await self.store.record_schedule_skip(schedule.name, next_at, True, None, occurrence)
            return
        try:
            job, _created = await self.jobs.submit(self._submit(schedule, occurrence_key(schedule.name, occurrence)))
        except ServiceError as exc:  # the template no longer fits, e.g. its plugin left the cluster
            log.warning("schedule %r: run due at %s made no job: %s", schedule.name, _iso(occurrence), exc.message)
            await self.store.record_schedule_skip(schedule.name, next_at, False, (exc.code, exc.message), occurrence)
            return
        if await self.store.record_schedule_run(schedule.name, job.id, now, next_at, occurrence):
            log.info("schedule %r: run due at %s is job %s", schedule.name, _iso(occurrence), job.id)

    async def run_now(self, name: str) -> JobRow:
        """``POST /api/v1/schedules/{name}/run``: a run outside the timetable (which it does
        not move), refused (``Conflict``) while the previous run is going."""
        async with self.lock:
            schedule = await self.store.get_schedule(name)
            if schedule is None:
                raise NotFound(f"no schedule {name!r}", code="schedule_not_found")
            busy = await self.previous_run_busy(schedule)
            if busy is not None:
                raise Conflict(f"schedule {name!r}: {busy}; runs never overlap", code="schedule_busy")
            now = clock.now()
            key = f"schedule:{name}:manual:{datetime.fromtimestamp(now, UTC).isoformat()}"
            job, _created = await self.jobs.submit(self._submit(schedule, key))
            await self.store.record_schedule_run(name, job.id, now, schedule.next_run_at)
        self.wake()
        return job

    async def previous_run_busy(self, schedule: ScheduleRow) -> str | None:
        """Why the previous run is not over yet, or None when it is (or there was none)."""
        if schedule.last_job_id is None:
            return None
        job = await self.store.get_job(schedule.last_job_id)
        if job is None:
            return None
        if not job.terminal:
            return f"the previous run, job {job.id}, is {job.state}"
        if not await self.store.delivery_finished(job.id):
            return f"the previous run, job {job.id}, is still delivering its records to its sink"
        return None

    @staticmethod
    def _submit(schedule: ScheduleRow, key: str) -> JobSubmit:
        submit = msgspec.convert(schedule.job, JobSubmit)
        return msgspec.structs.replace(submit, idempotency_key=key)


def _iso(epoch: float) -> str:
    return utc_iso(datetime.fromtimestamp(epoch, UTC))
