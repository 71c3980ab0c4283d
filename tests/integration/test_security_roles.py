"""The API's roles, attacked: an operator's and a viewer's token try every call above their
role, against a real control plane, and the control plane's own state (its tokens, jobs,
schedules and audit log, read with an admin's token) shows that nothing changed.

``viewer`` reads, ``operator`` submits and cancels, ``admin`` manages tokens, agents and
configuration (DESIGN, "Security model"). A 403 alone would prove little: a route that did the
work and then answered 403 would pass it; so each refusal is checked where it would have acted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from bridgehead_testing.harness import Api, ControlPlane, wait_until
from bridgehead_testing.scripted_agent import Channel, Inbox
from bridgehead_testing.scripted_agent import enroll as scripted_enroll

SCHEDULE = {"name": "", "cron": "0 0 1 1 *", "timezone": "UTC", "job": {"plugin": "echo", "params": {}}}


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One control plane for the module, with no agent: submitted jobs stay queued, so a job's
    state shows whether a refused cancel did anything."""
    cp = ControlPlane(tmp_path_factory.mktemp("roles"))
    try:
        yield cp.start()
    finally:
        cp.stop()  # also when start() failed half-way: its process must not outlive the test


def new_token(control: ControlPlane, role: str, name: str, **extra: Any) -> dict[str, Any]:
    """A fresh API token of ``role`` made by the admin (its secret in ``token``)."""
    status, made = control.api().request("POST", "/api/v1/tokens", {"role": role, "name": name, **extra})
    assert 201 == status, made
    return dict(made)


def as_role(control: ControlPlane, role: str, name: str) -> tuple[Api, str]:
    """A client holding a fresh token of ``role``, and that token's id (what the audit log names)."""
    made = new_token(control, role, name)
    return control.api(made["token"]), str(made["id"])


def tokens(control: ControlPlane) -> dict[str, tuple[str, str, float | None, float | None]]:
    """The control plane's API tokens by id, as the admin sees them: name, role, expiry and
    revocation (not ``last_used_at``, which a refused request may rightly update)."""
    status, listing = control.api().request("GET", "/api/v1/tokens")
    assert 200 == status, listing
    return {t["id"]: (t["name"], t["role"], t["expires_at"], t["revoked_at"]) for t in listing["tokens"]}


def audit_by(control: ControlPlane, token_id: str) -> list[dict[str, Any]]:
    """Every audit entry naming the token ``token_id`` as who acted."""
    status, page = control.api().request("GET", f"/api/v1/audit?actor={token_id}&limit=1000")
    assert 200 == status, page
    return list(page["entries"])


def schedule(control: ControlPlane, name: str) -> tuple[int, Any]:
    return control.api().request("GET", f"/api/v1/schedules/{name}")


def test_an_operator_cannot_reach_above_its_role(control: ControlPlane) -> None:
    """An operator's token gets 403 for making or revoking API tokens, making enrolment tokens
    (``--replace`` ones included), revoking agents, forgetting a sync and reading tokens or the
    audit log; no token appears or disappears and the audit log names it for nothing."""
    operator, operator_id = as_role(control, "operator", "mallory-operator")
    admin_id = str(operator.request("GET", "/api/v1/whoami", token=control.admin_token)[1]["token"])
    before = tokens(control)
    # The premise: this token is a working operator's (it may submit), so a 403 is its role's doing.
    job = operator.submit("echo", {})
    audited = [(e["action"], e["actor_name"]) for e in audit_by(control, operator_id)]
    assert [("job.submit", "mallory-operator")] == audited

    calls: list[tuple[str, str, Any]] = [
        ("POST", "/api/v1/tokens", {"role": "admin", "name": "escalated"}),
        ("POST", "/api/v1/tokens", {"role": "operator", "name": "spare"}),
        ("DELETE", f"/api/v1/tokens/{admin_id}", None),
        ("POST", "/api/v1/enrollment-tokens", {"cluster": "default"}),
        ("POST", "/api/v1/enrollment-tokens", {"cluster": "default", "replace": "some-agent"}),
        ("DELETE", "/api/v1/agents/some-agent", None),
        ("DELETE", "/api/v1/syncs/some-sync", None),
        ("GET", "/api/v1/tokens", None),
        ("GET", "/api/v1/audit", None),
    ]
    answers = [(method, path, operator.request(method, path, body)) for method, path, body in calls]

    assert [(m, p, 403) for m, p, _ in calls] == [(m, p, a[0]) for m, p, a in answers], answers
    assert all("token" not in a[1] for _, _, a in answers)  # no secret in any refusal
    assert before == tokens(control)  # nothing made, nothing revoked
    assert 200 == control.api().request("GET", "/api/v1/whoami")[0]  # the admin's token still works
    assert ["job.submit"] == [e["action"] for e in audit_by(control, operator_id)]
    assert "queued" == control.api().job(job["id"])["state"]


def test_a_viewer_changes_nothing(control: ControlPlane) -> None:
    """A viewer's token reads, and gets 403 for submitting, cancelling, and every schedule change;
    the job it tried to cancel is still queued, the schedule it tried to change is as it was,
    no job was run from it, and the audit log names the viewer for nothing."""
    viewer, viewer_id = as_role(control, "viewer", "mallory-viewer")
    operator, _ = as_role(control, "operator", "ops")
    job = operator.submit("echo", {})
    name = f"kept-{job['id'][:8]}"
    assert 201 == operator.request("POST", "/api/v1/schedules", {**SCHEDULE, "name": name})[0]
    status, kept = schedule(control, name)
    assert (200, True) == (status, kept["enabled"])
    # The premise: this token is a working viewer's (it reads what it is refused to change).
    assert (200, "queued") == (viewer.request("GET", f"/api/v1/jobs/{job['id']}")[0], viewer.job(job["id"])["state"])
    jobs_before = control.api().request("GET", "/api/v1/jobs?limit=1000")[1]

    calls: list[tuple[str, str, Any]] = [
        ("POST", "/api/v1/jobs", {"plugin": "echo", "params": {}}),
        ("POST", f"/api/v1/jobs/{job['id']}/cancel", None),
        ("POST", f"/api/v1/jobs/{job['id']}/sync/retry", None),
        ("POST", "/api/v1/schedules", {**SCHEDULE, "name": f"{name}-new"}),
        ("PATCH", f"/api/v1/schedules/{name}", {"enabled": False}),
        ("POST", f"/api/v1/schedules/{name}/run", None),
        ("DELETE", f"/api/v1/schedules/{name}", None),
    ]
    answers = [(method, path, viewer.request(method, path, body)) for method, path, body in calls]

    assert [(m, p, 403) for m, p, _ in calls] == [(m, p, a[0]) for m, p, a in answers], answers
    assert "queued" == control.api().job(job["id"])["state"]
    assert (200, kept) == schedule(control, name)
    assert 404 == schedule(control, f"{name}-new")[0]
    assert jobs_before == control.api().request("GET", "/api/v1/jobs?limit=1000")[1]  # none submitted or run
    assert [] == audit_by(control, viewer_id)


def test_a_token_is_refused_once_it_expires_even_if_just_used(control: ControlPlane) -> None:
    """A token with a 3 s life, used (and so remembered by the control plane) a second before its
    end, is refused just after it, sooner than the control plane's memory of it would lapse."""
    made = new_token(control, "viewer", "short-lived", ttl_s=3)
    expires_at = float(made["expires_at"])
    client = control.api(made["token"])
    # The premise: accepted inside its life, as late in it as the clock lets us ask.
    wait_until(lambda: time.time() > expires_at - 1, 5, "the token's last second")
    assert 200 == client.request("GET", "/api/v1/whoami")[0]
    used_at = time.monotonic()
    wait_until(lambda: time.time() > expires_at, 5, "the token's expiry")

    status, answer = client.request("GET", "/api/v1/whoami")

    # This test is about the memory: asked again well within its 5 s (TOKEN_CACHE_S).
    assert time.monotonic() - used_at < 4, "too slow to ask within the control plane's memory of the token"
    assert (401, "token_expired") == (status, answer["error"]["code"]), answer


def syncs(control: ControlPlane) -> dict[str, dict[str, Any]]:
    status, body = control.api().request("GET", "/api/v1/syncs")
    assert 200 == status, body
    return {s["name"]: s for s in body}


async def keep_sync_state(control: ControlPlane, sync: str) -> None:
    """Run one ``ldap`` sync job through a scripted agent that completes it with a state, so
    that the control plane keeps a state for ``sync`` (the agent offers only ``ldap``: the echo
    jobs of the other tests, left queued, are never offered to it)."""
    identity = await asyncio.to_thread(scripted_enroll, control, f"syncer-{sync}")
    channel = await Channel.open(control.url, identity.context())
    try:
        await channel.handshake(identity, capacity=1, plugins=[{"name": "ldap"}])
        job = await asyncio.to_thread(
            control.api().submit, "ldap", {"mode": "sync", "sync": sync, "base": "dc=example"}
        )
        inbox = Inbox(channel)
        offer = await inbox.next("offer")
        ref = {"job_id": offer["job_id"], "attempt": offer["attempt"]}
        state = {"name": sync, "version": 0, "watermark": "w1", "ids": ""}
        await channel.send(
            {"type": "accept", **ref},
            {"type": "complete", **ref, "record_count": 0, "status": "succeeded", "sync_state": state},
        )
        await inbox.next("complete_ack")
        done = await asyncio.to_thread(control.api().wait_done, job["id"], 20)
        assert "succeeded" == done["state"], done
    finally:
        await channel.close()


async def test_forgetting_a_sync_is_for_admins_and_audited(control: ControlPlane) -> None:
    """``DELETE /api/v1/syncs/NAME`` is 403 for an operator, whose try leaves the sync's state as
    it was; an admin's forgets it, and the audit log names the admin and the sync."""
    await keep_sync_state(control, "directory")
    kept = (await asyncio.to_thread(syncs, control))["directory"]
    assert "w1" == kept["watermark"]  # the premise: a state to forget
    operator, operator_id = await asyncio.to_thread(as_role, control, "operator", "sync-operator")
    admin, admin_id = await asyncio.to_thread(as_role, control, "admin", "sync-admin")

    refused = await asyncio.to_thread(operator.request, "DELETE", "/api/v1/syncs/directory")
    assert 403 == refused[0], refused
    assert kept == (await asyncio.to_thread(syncs, control))["directory"]
    forgotten = await asyncio.to_thread(admin.request, "DELETE", "/api/v1/syncs/directory")

    assert 200 == forgotten[0], forgotten
    assert "directory" not in await asyncio.to_thread(syncs, control)
    entries = await asyncio.to_thread(audit_by, control, admin_id)
    assert [("sync.reset", "sync-admin", {"sync": "directory"})] == [
        (e["action"], e["actor_name"], e["detail"]) for e in entries
    ]
    assert [] == await asyncio.to_thread(audit_by, control, operator_id)
