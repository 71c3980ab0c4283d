"""Recurring schedules end to end: a real control plane and agent, runs made by the echo plugin."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from bridgehead_testing.harness import Agent, Api, ControlPlane, wait_connected, wait_until

from bridgehead.control.schedules.clock import OFFSET_ENV

AgentFactory = Callable[..., Agent]

PARIS = ZoneInfo("Europe/Paris")
YEARLY = "0 0 1 1 *"  # never due while a test runs: its runs are the ones the test asks for
SLOW = {"sleep_s": 90}  # a run still going for as long as any test here lasts


def body(name: str, cron: str = YEARLY, params: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    job = {"plugin": "echo", "params": {"records": [{"hello": name}]} if params is None else params}
    return {"name": name, "cron": cron, "timezone": "Europe/Paris", "job": job, **extra}


def create(api: Api, name: str, cron: str = YEARLY, params: dict[str, Any] | None = None, **extra: Any) -> Any:
    status, created = api.request("POST", "/api/v1/schedules", body(name, cron, params, **extra))
    assert 201 == status, created
    return created


def get(api: Api, name: str) -> dict[str, Any]:
    status, found = api.request("GET", f"/api/v1/schedules/{name}")
    assert 200 == status, found
    return dict(found)


def audit_actions(control: ControlPlane) -> list[str]:
    with sqlite3.connect(control.data_dir / "control.db") as db:
        return [r[0] for r in db.execute("SELECT action FROM audit WHERE action LIKE 'schedule.%' ORDER BY id")]


def jobs_of(api: Api, name: str) -> list[dict[str, Any]]:
    status, page = api.request("GET", "/api/v1/jobs?limit=1000")
    assert 200 == status, page
    return [j for j in page["jobs"] if (j["idempotency_key"] or "").startswith(f"schedule:{name}:")]


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_create_list_get_delete_and_openapi(control: ControlPlane) -> None:
    """A schedule is created with its next run in UTC and local time, listed, read, deleted, audited."""
    api = control.api()
    created = create(api, "ldap-users-nightly")
    now_paris = datetime.now(PARIS)
    next_local = datetime(now_paris.year + 1, 1, 1, tzinfo=PARIS)
    expected = {
        "name": "ldap-users-nightly",
        "cron": YEARLY,
        "timezone": "Europe/Paris",
        "enabled": True,
        "job": {
            "plugin": "echo",
            "params": {"records": [{"hello": "ldap-users-nightly"}]},
            "cluster": "default",
            "timeout_s": None,
            "max_attempts": None,
            "sink": None,
        },
        "next_run_at": next_local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "next_run_at_local": next_local.isoformat(),
        "last_run_at": None,
        "last_job_id": None,
        "last_job_state": None,
        "runs": 0,
        "skipped_overlaps": 0,
        "last_error": None,
    }
    assert expected == {k: v for k, v in created.items() if k != "created_at"}
    assert created == get(api, "ldap-users-nightly")
    assert (200, {"schedules": [created], "next": None}) == api.request("GET", "/api/v1/schedules")

    assert (200, {"name": "ldap-users-nightly", "deleted": True}) == api.request(
        "DELETE", "/api/v1/schedules/ldap-users-nightly"
    )
    status, gone = api.request("GET", "/api/v1/schedules/ldap-users-nightly")
    assert (404, "schedule_not_found") == (status, gone["error"]["code"])
    assert (200, {"schedules": [], "next": None}) == api.request("GET", "/api/v1/schedules")
    assert ["schedule.create", "schedule.delete"] == audit_actions(control)

    status, doc = api.request("GET", "/api/v1/openapi.json")
    operations = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert {
        ("/api/v1/schedules", "post"),
        ("/api/v1/schedules", "get"),
        ("/api/v1/schedules/{name}", "get"),
        ("/api/v1/schedules/{name}", "patch"),
        ("/api/v1/schedules/{name}", "delete"),
        ("/api/v1/schedules/{name}/run", "post"),
    } <= operations
    assert {"ScheduleCreate", "SchedulePatch", "Schedule"} <= set(doc["components"]["schemas"])


def test_bad_input_is_refused_with_what_is_wrong(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """Every malformed creation gets a 4xx whose code and message say what is wrong; nothing is stored."""
    api = control.api()
    agent_factory(control)
    wait_connected(api, ["agent-1"])  # so the template is checked against the plugins offered
    create(api, "taken")

    def with_job(**job: Any) -> dict[str, Any]:
        return {**body("ok"), "job": {"plugin": "echo", "params": {}, **job}}

    cases: list[tuple[Any, int, str, str]] = [
        (body("a", "* 25 * * *"), 422, "invalid_cron", "cron field 2 (hour) '25': 25 is out of range 0-23"),
        (body("a", "0 * * * * *"), 422, "invalid_cron", "has 6 fields; it needs 5"),
        (body("a", "* * * * FUNDAY"), 422, "invalid_cron", "cron field 5 (day-of-week)"),
        ({**body("a"), "timezone": "Europe/Lutetia"}, 422, "invalid_timezone", "'Europe/Lutetia' is not an IANA"),
        (body("-leading-dash"), 422, "invalid_request", "$.name"),
        (body("x" * 129), 422, "invalid_request", "$.name"),
        (body("taken"), 409, "schedule_exists", "a schedule named 'taken' exists"),
        (with_job(idempotency_key="k"), 422, "invalid_request", "job.idempotency_key: not allowed"),
        (with_job(plugin="nosuch"), 422, "unknown_plugin", "job: no agent of cluster 'default' offers"),
        (with_job(params={"sleep_s": "soon"}), 422, "invalid_params", "job: params.sleep_s"),
        (with_job(timeout_s=10**9), 422, "invalid_request", "job: timeout_s"),
        ({**body("a"), "every": "day"}, 422, "invalid_request", "every"),
        ({"name": "a", "cron": YEARLY}, 422, "invalid_request", "job"),
        (b"{not json", 422, "invalid_json", "not valid JSON"),
    ]
    for request, status, code, message in cases:
        got_status, got = api.request("POST", "/api/v1/schedules", request)
        assert (status, code) == (got_status, got["error"]["code"]), (request, got)
        assert message in got["error"]["message"], (request, got)

    status, got = api.request("PATCH", "/api/v1/schedules/taken", {"enabled": "yes"})
    assert (422, "invalid_request") == (status, got["error"]["code"]), got
    for method, path in (
        ("GET", "/api/v1/schedules/nosuch"),
        ("DELETE", "/api/v1/schedules/nosuch"),
        ("PATCH", "/api/v1/schedules/nosuch"),
        ("POST", "/api/v1/schedules/nosuch/run"),
        ("GET", "/api/v1/schedules/" + "x" * 300),
    ):
        status, got = api.request(method, path, {"enabled": False} if method == "PATCH" else None)
        assert (404, "schedule_not_found") == (status, got["error"]["code"]), (method, path, got)
    assert ["taken"] == [s["name"] for s in api.request("GET", "/api/v1/schedules")[1]["schedules"]]


def test_schedule_count_is_limited(tmp_path: Path) -> None:
    """schedules.max_schedules caps how many exist; the one over it gets 409 too_many_schedules."""
    control = ControlPlane(tmp_path)
    control.config.write_text(control.config.read_text() + "\n[schedules]\nmax_schedules = 2\n")
    control.start()
    try:
        api = control.api()
        create(api, "one")
        create(api, "two")
        status, got = api.request("POST", "/api/v1/schedules", body("three"))
        assert (409, "too_many_schedules") == (status, got["error"]["code"]), got
        api.request("DELETE", "/api/v1/schedules/one")
        create(api, "three")
    finally:
        control.stop()


def test_roles(control: ControlPlane) -> None:
    """Viewers read; operators create, run, enable and delete; no token is 401."""
    viewer = control.api(control.token("viewer"))
    operator = control.api(control.token("operator"))
    anonymous = Api(control.url, None)
    create(operator, "by-operator")
    assert 200 == viewer.request("GET", "/api/v1/schedules")[0]
    assert 200 == viewer.request("GET", "/api/v1/schedules/by-operator")[0]
    for method, path, request in (
        ("POST", "/api/v1/schedules", body("by-viewer")),
        ("PATCH", "/api/v1/schedules/by-operator", {"enabled": False}),
        ("POST", "/api/v1/schedules/by-operator/run", None),
        ("DELETE", "/api/v1/schedules/by-operator", None),
    ):
        status, got = viewer.request(method, path, request)
        assert (403, "forbidden") == (status, got["error"]["code"]), (method, path)
    status, got = anonymous.request("GET", "/api/v1/schedules")
    assert (401, "unauthorized") == (status, got["error"]["code"])
    assert 200 == operator.request("PATCH", "/api/v1/schedules/by-operator", {"enabled": False})[0]
    assert 201 == operator.request("POST", "/api/v1/schedules/by-operator/run")[0]
    assert 200 == operator.request("DELETE", "/api/v1/schedules/by-operator")[0]


def test_run_now_never_overlaps_the_previous_run(control: ControlPlane, agent_factory: AgentFactory) -> None:
    """POST .../run makes a job; while it runs another run is 409; once it ends a run is allowed."""
    api = control.api()
    agent_factory(control)
    wait_connected(api, ["agent-1"])
    create(api, "slow", params=SLOW)

    status, first = api.request("POST", "/api/v1/schedules/slow/run")
    assert 201 == status, first
    assert first["idempotency_key"].startswith("schedule:slow:manual:")
    wait_until(lambda: api.job(first["id"])["state"] == "running", 20, "the first run running")

    status, refused = api.request("POST", "/api/v1/schedules/slow/run")
    assert (409, "schedule_busy") == (status, refused["error"]["code"]), refused
    assert first["id"] in refused["error"]["message"]
    seen = get(api, "slow")
    assert (1, first["id"], "running") == (seen["runs"], seen["last_job_id"], seen["last_job_state"])

    api.request("POST", f"/api/v1/jobs/{first['id']}/cancel")
    assert "cancelled" == api.wait_done(first["id"])["state"]
    status, second = api.request("POST", "/api/v1/schedules/slow/run")
    assert 201 == status, second
    assert second["id"] != first["id"]
    api.request("POST", f"/api/v1/jobs/{second['id']}/cancel")
    assert 2 == get(api, "slow")["runs"]
    assert ["schedule.create", "schedule.run", "schedule.run"] == audit_actions(control)


def test_disable_and_enable(control: ControlPlane) -> None:
    """A disabled schedule has no next run; enabling plans the next occurrence after now."""
    api = control.api()
    planned = create(api, "toggled", cron="*/5 * * * *")["next_run_at"]
    status, disabled = api.request("PATCH", "/api/v1/schedules/toggled", {"enabled": False})
    assert (200, False, None, None) == (
        status,
        disabled["enabled"],
        disabled["next_run_at"],
        disabled["next_run_at_local"],
    )
    status, enabled = api.request("PATCH", "/api/v1/schedules/toggled", {"enabled": True})
    assert (200, True) == (status, enabled["enabled"])
    assert 0 < epoch(enabled["next_run_at"]) - time.time() <= 300
    assert epoch(enabled["next_run_at"]) >= epoch(planned)
    assert ["schedule.create", "schedule.disable", "schedule.enable"] == audit_actions(control)


def test_minute_boundary_runs_the_idle_schedule_and_skips_the_busy_one(
    control_factory: Callable[..., ControlPlane], agent_factory: AgentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a real minute boundary, '* * * * *' makes a job keyed by its occurrence, unless the
    schedule's previous run is still going: then the occurrence is skipped and counted."""
    # The scheduler's clock set to 35 s past a minute (clock.OFFSET_ENV, tests only), so the
    # boundary comes ~25 s after start instead of up to a minute later; both schedules are
    # created well before it, so they plan the same one.
    now = time.time()
    monkeypatch.setenv(OFFSET_ENV, str(60 * (now // 60) + 95 - now))
    control = control_factory(heartbeat_s=1.0)
    api = control.api()
    agent_factory(control)
    wait_connected(api, ["agent-1"])
    # Created disabled and run by hand first, so its previous run is going before any occurrence.
    create(api, "busy", cron="* * * * *", params=SLOW, enabled=False)
    status, slow = api.request("POST", "/api/v1/schedules/busy/run")
    assert 201 == status, slow
    wait_until(lambda: api.job(slow["id"])["state"] == "running", 20, "the busy schedule's run going")
    busy_next = api.request("PATCH", "/api/v1/schedules/busy", {"enabled": True})[1]["next_run_at"]
    idle_next = create(api, "idle", cron="* * * * *")["next_run_at"]
    assert busy_next == idle_next, "both are due at the same minute boundary"

    idle = wait_until(lambda: (s := get(api, "idle"))["runs"] >= 1 and s, 75, "the idle schedule's first run")
    job = api.wait_done(idle["last_job_id"])
    assert ("succeeded", f"schedule:idle:{idle_next}") == (job["state"], job["idempotency_key"])
    assert [{"hello": "idle"}] == api.records(job["id"])

    busy = wait_until(lambda: (s := get(api, "busy"))["skipped_overlaps"] >= 1 and s, 20, "the busy one skipped")
    assert (1, slow["id"]) == (busy["runs"], busy["last_job_id"])
    assert epoch(busy["next_run_at"]) > epoch(busy_next)
    assert [slow["id"]] == [j["id"] for j in jobs_of(api, "busy")]
    api.request("POST", f"/api/v1/jobs/{slow['id']}/cancel")


def test_missed_run_runs_once_on_start_and_an_occurrence_makes_one_job(
    control: ControlPlane, agent_factory: AgentFactory
) -> None:
    """Down over three occurrences: one run on start, keyed by the first missed one. A crash
    between making that job and recording the run (the row rewound) makes no second job."""
    api = control.api()
    agent_factory(control)
    wait_connected(api, ["agent-1"])
    create(api, "nightly", cron="0 3 * * *")
    control.stop()

    # The downtime, written as it would have been left: the 03:00 of three days ago still next.
    missed = (datetime.now(PARIS) - timedelta(days=3)).replace(hour=3, minute=0, second=0, microsecond=0)
    missed_key = f"schedule:nightly:{missed.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    with sqlite3.connect(control.data_dir / "control.db") as db:
        db.execute("UPDATE schedules SET next_run_at=? WHERE name='nightly'", (missed.timestamp(),))
    control.start()

    ran = wait_until(lambda: (s := get(api, "nightly"))["runs"] >= 1 and s, 20, "the missed run")
    job = api.wait_done(ran["last_job_id"])
    assert ("succeeded", missed_key) == (job["state"], job["idempotency_key"])
    assert [job["id"]] == [j["id"] for j in jobs_of(api, "nightly")]
    upcoming = datetime.fromisoformat(ran["next_run_at_local"])
    assert (3, 0) == (upcoming.hour, upcoming.minute)
    assert 0 < upcoming.timestamp() - time.time() <= 25 * 3600
    assert 0 == ran["skipped_overlaps"]

    # A crash after the job was stored and before the run was recorded leaves this row behind.
    control.stop()
    with sqlite3.connect(control.data_dir / "control.db") as db:
        db.execute(
            "UPDATE schedules SET next_run_at=?, runs=0, last_job_id=NULL, last_run_at=NULL WHERE name='nightly'",
            (missed.timestamp(),),
        )
    control.start()

    again = wait_until(lambda: (s := get(api, "nightly"))["runs"] >= 1 and s, 20, "the occurrence run again")
    assert (job["id"], "succeeded") == (again["last_job_id"], again["last_job_state"])
    assert [job["id"]] == [j["id"] for j in jobs_of(api, "nightly")]
    assert "was missed; running it once now" in control.log_text()
