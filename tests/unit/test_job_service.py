"""The control plane's services work without HTTP: a real control plane (SQLite store,
dispatcher, no agent connected) is driven through ``control.jobs``, ``control.tokens`` and
``control.schedules``, and their errors carry the codes the API has always answered with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from bridgehead.control.config import ControlConfig
from bridgehead.control.errors import BadRequest
from bridgehead.control.http.responses import error_response, status_of
from bridgehead.control.plane import ControlPlane
from bridgehead.control.schedules.models import ScheduleCreate
from bridgehead.control.services.errors import (
    Conflict,
    Forbidden,
    Invalid,
    LimitExceeded,
    NotFound,
    ServiceError,
    Unauthenticated,
)
from bridgehead.control.services.requests import ApiTokenRequest, JobSubmit
from bridgehead.control.services.shapes import ApiToken, Job
from bridgehead.control.store.rows import CLI


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(tmp_path, ControlConfig())
    await plane.dispatcher.start()
    try:
        yield plane
    finally:
        await plane.dispatcher.stop()
        plane.schemas.close()
        await plane.store.close()


async def test_a_job_is_submitted_viewed_and_cancelled(control: ControlPlane) -> None:
    """Submitted with no agent connected, a job waits queued; its view has the API's shape."""
    job, created = await control.jobs.submit(JobSubmit(plugin="echo", params={"n": 1}), CLI)
    assert created
    view = await control.jobs.view(await control.jobs.get(job.id))
    assert "queued" == msgspec.convert(view, Job).state
    with pytest.raises(Conflict) as not_finished:
        await control.jobs.records(job, 0, 10)
    assert "job_not_finished" == not_finished.value.code
    assert "cancelled" == (await control.jobs.cancel(job.id, CLI))["state"]
    with pytest.raises(Conflict) as finished:
        await control.jobs.cancel(job.id, CLI)
    assert "job_finished" == finished.value.code


async def test_an_idempotency_key_gives_the_first_job_back(control: ControlPlane) -> None:
    """The same key and content: the first job, not created; other content: a conflict."""
    first, _ = await control.jobs.submit(JobSubmit(plugin="echo", params={}, idempotency_key="k"))
    again, created = await control.jobs.submit(JobSubmit(plugin="echo", params={}, idempotency_key="k"))
    assert (first.id, False) == (again.id, created)
    with pytest.raises(Conflict) as reused:
        await control.jobs.submit(JobSubmit(plugin="echo", params={"x": 1}, idempotency_key="k"))
    assert "idempotency_conflict" == reused.value.code


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("submit", "kind", "code"),
    [
        (
            JobSubmit(plugin="echo", params={"a": _nested(40)}),
            LimitExceeded,
            "too_deep",
        ),
        (JobSubmit(plugin="echo", params={"a": "x" * 300_000}), LimitExceeded, "too_large"),
        (JobSubmit(plugin="echo", params={}, timeout_s=1e9), Invalid, "invalid_request"),
        (JobSubmit(plugin="echo", params={}, sink={"servicenow": "nowhere"}), Invalid, "invalid_sink"),
    ],
)
async def test_checks_refuse_with_stable_codes(
    control: ControlPlane, submit: JobSubmit, kind: type[ServiceError], code: str
) -> None:
    """Each check has its error class and code, and nothing is stored when one fails."""
    with pytest.raises(kind) as refused:
        await control.jobs.submit(submit)
    assert code == refused.value.code
    assert [] == (await control.jobs.list(None, None, 10, None))["jobs"]


async def test_unknown_jobs_are_not_found(control: ControlPlane) -> None:
    """An unknown id, or one longer than any id, is NotFound with the API's code."""
    for job_id in ("nope", "x" * 65):
        with pytest.raises(NotFound) as missing:
            await control.jobs.get(job_id)
        assert "job_not_found" == missing.value.code


async def test_tokens_authorize_by_role_until_revoked(control: ControlPlane) -> None:
    """A viewer token is a viewer, not an admin; once revoked it is refused at once."""
    made = await control.tokens.create(ApiTokenRequest(role="viewer", name="ci"), CLI)
    msgspec.convert({k: v for k, v in made.items() if k != "token"}, ApiToken)
    actor = await control.tokens.authorize(made["token"], "viewer")
    assert ("viewer", "ci") == (actor.role, actor.name)
    with pytest.raises(Forbidden):
        await control.tokens.authorize(made["token"], "admin")
    await control.tokens.revoke(made["id"], CLI)
    with pytest.raises(Unauthenticated) as revoked:
        await control.tokens.authorize(made["token"], "viewer")
    assert "token_revoked" == revoked.value.code


async def test_a_schedule_template_is_checked_as_a_job(control: ControlPlane) -> None:
    """A template failing a job check is refused with its class and code, and says where."""
    template = JobSubmit(plugin="echo", params={}, timeout_s=1e9)
    with pytest.raises(Invalid) as refused:
        await control.schedules.create(ScheduleCreate(name="n", cron="* * * * *", job=template), CLI)
    assert refused.value.message.startswith("job: timeout_s")


def test_service_errors_keep_their_http_statuses() -> None:
    """At the HTTP boundary each class has the status the API answered with before."""
    expected = {Invalid: 422, LimitExceeded: 422, Unauthenticated: 401, Forbidden: 403, NotFound: 404, Conflict: 409}
    assert expected == {kind: status_of(kind("m")) for kind in expected}
    response = error_response(NotFound("no job 'x'", code="job_not_found"))
    assert (404, b'{"error":{"code":"job_not_found","message":"no job \'x\'"}}') == (
        response.status_code,
        response.body,
    )
    assert 422 == error_response(BadRequest("bad")).status_code
