"""The job service: submit, view, wait for, list, page the records of and cancel jobs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridgehead.control.config import ControlConfig
from bridgehead.control.services.checks import SubmitChecks
from bridgehead.control.services.errors import Conflict, Invalid, NotFound
from bridgehead.control.services.ports import JobDispatcher
from bridgehead.control.services.requests import JobSubmit
from bridgehead.control.services.views import job_view, sync_view
from bridgehead.control.store.base import Store
from bridgehead.control.store.rows import JOB_STATES, Actor, JobRow, json_size

MAX_JOB_ID = 64  # longer ids are not looked up: no job has one


@dataclass
class RecordsPage:
    """Records of a job's final attempt as the agent sent them (JSON bytes, not parsed again)."""

    records: list[bytes]
    next: int | None  # pass as ``after`` for the following page (None: this was the last)
    attempt: int


class JobService:
    def __init__(
        self,
        config: ControlConfig,
        store: Store,
        dispatcher: JobDispatcher,
        checks: SubmitChecks,
        new_id: Callable[[], str],
    ) -> None:
        self.config = config
        self.store = store
        self.dispatcher = dispatcher
        self.checks = checks
        self.new_id = new_id

    def validate(self, submit: JobSubmit) -> None:
        """``Invalid`` saying what is wrong with ``submit``, checked as a submission is.
        Schedules check their job template with it when they are created."""
        self.checks.check(submit)

    async def submit(self, submit: JobSubmit, actor: Actor | None = None) -> tuple[JobRow, bool]:
        """Validate and store a job (POST /jobs, and each run of a schedule); ``(job,
        created)``: an idempotency key already used gives the first job back (``Conflict`` if
        with other content). With ``actor``, the submission is audited (in the job's own
        commit when it can be)."""
        self.checks.check(submit)
        jobs = self.config.jobs
        job = JobRow(
            id=self.new_id(),
            plugin=submit.plugin,
            params=submit.params,
            cluster=submit.cluster,
            max_attempts=submit.max_attempts or jobs.default_max_attempts,
            timeout_s=submit.timeout_s or jobs.default_timeout_s,
            idempotency_key=submit.idempotency_key,
            sink=submit.sink,
            created_at=time.time(),
        )
        audited = None
        detail = {"job": job.id, "plugin": job.plugin, "cluster": job.cluster}
        if actor is not None and job.idempotency_key is None:
            # Issued before the insert, in the same loop turn: one commit holds both.
            audited = self.store.audit(actor, "job.submit", detail, job.created_at)
        stored, created = await self.dispatcher.submit(job)
        if audited is not None:
            await audited
        elif actor is not None and created:
            await self.store.audit(actor, "job.submit", detail, job.created_at)
        if not created:
            same = (stored.plugin, stored.params, stored.cluster) == (job.plugin, job.params, job.cluster)
            if not same:
                raise Conflict(
                    f"idempotency_key {job.idempotency_key!r} was used for job {stored.id} with other content",
                    code="idempotency_conflict",
                )
        return stored, created

    async def get(self, job_id: str) -> JobRow:
        job = await self.store.get_job(job_id) if len(job_id) <= MAX_JOB_ID else None
        if job is None:
            raise NotFound(f"no job {job_id!r}", code="job_not_found")
        return job

    async def view(self, job: JobRow, wait_s: float = 0.0) -> dict[str, Any]:
        """The job's view (with its delivery's when it has a sink), once it has ended or
        ``wait_s`` have passed."""
        if wait_s > 0 and not job.terminal:
            outcome = await self.dispatcher.wait(job.id, wait_s)
            # The outcome carries what the store now says, so the answer needs no read.
            if outcome is not None:
                view = job_view(job, None, outcome)
                if job.sink is not None:
                    view["sync"] = await self.sync_view(job, str(outcome["state"]), int(outcome["record_count"]))
                return view
            job = await self.store.get_job(job.id) or job
        view = job_view(job, self.dispatcher.progress.get(job.id))
        if job.sink is not None:
            view["sync"] = await self.sync_view(job, job.state, job.record_count)
        return view

    async def sync_view(self, job: JobRow, state: str, record_count: int) -> dict[str, Any]:
        delivery = await self.store.delivery(job.id)
        return sync_view(delivery, await self.store.delivery_counts(job.id), state, record_count)

    @staticmethod
    def check_state(state: str | None) -> None:
        if state is not None and state not in JOB_STATES:
            raise Invalid(f"state={state!r} is not a job state")

    async def list(self, state: str | None, cluster: str | None, limit: int, before: str | None) -> dict[str, Any]:
        """Newest first: at most ``limit`` jobs, and about ``server.max_page_bytes`` of them."""
        self.check_state(state)
        max_bytes = self.config.server.max_page_bytes
        jobs = await self.store.list_jobs(state, cluster, limit, before, max_bytes)
        # ``next``: pass it as ``before`` for the following page (None: this was the last).
        # Sized as the store sizes them (their stored JSON text), so both agree where a page ends.
        size = sum(json_size(j.params) + json_size(j.sink) for j in jobs)
        cut = len(jobs) == limit or size >= max_bytes
        return {"jobs": [job_view(j) for j in jobs], "next": jobs[-1].id if jobs and cut else None}

    async def records(self, job: JobRow, after: int, limit: int) -> RecordsPage:
        """A page of the records of the job's final attempt; ``Conflict`` until it has ended."""
        if not job.terminal:
            raise Conflict(
                f"job {job.id} is {job.state}: its records are visible once it ends (the final attempt "
                "decides which); wait with GET /api/v1/jobs/{id}?wait=S",
                code="job_not_finished",
            )
        rows = await self.store.records(job.id, job.attempt, after, limit, self.config.server.max_page_bytes)
        last = rows[-1][0] if rows else after
        more = bool(rows) and last < job.record_count
        return RecordsPage([data for _seq, data in rows], last if more else None, job.attempt)

    async def cancel(self, job_id: str, actor: Actor) -> dict[str, Any]:
        job = await self.get(job_id)
        if job.terminal:
            raise Conflict(f"job {job.id} has ended ({job.state})", code="job_finished")
        job = await self.dispatcher.cancel(job)
        await self.store.audit(actor, "job.cancel", {"job": job.id}, time.time())
        return job_view(job)
