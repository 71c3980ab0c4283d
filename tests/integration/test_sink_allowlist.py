"""Sinks touch only what their instance's configuration allows: ``tables`` and ``allow_delete``
of ``[servicenow.NAME]``, checked at submit (jobs and schedules) and again at delivery, against
a real control plane, agent and the ServiceNow stand-in."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.harness import Agent, Api, ControlPlane, scaled, wait_connected, wait_until
from bridgehead_testing.sandbox_server import SandboxServer, with_setup

SECRET_ENV = "BH_TEST_SN_SECRET"  # noqa: S105 - the name of a variable, not a secret
SANDBOX_CONFIG = """
[transforms.u_rows_import]
target = "u_rows"
coalesce = ["u_id"]
[transforms.u_rows_import.fields]
u_id = "u_id"
"""
ALLOWED = {"servicenow": "sandbox", "import_set": "u_rows_import", "map": {"u_id": "id"}, "passthrough": False}
FORBIDDEN = {"servicenow": "sandbox", "table": "u_forbidden", "coalesce": ["u_id"], "map": {"u_id": "id"}}


def servers_sink(on_delete: str) -> dict[str, Any]:
    return {
        "servicenow": "sandbox",
        "table": "u_servers",
        "coalesce": ["name"],
        "map": {"name": "name"},
        "passthrough": False,
        "on_delete": on_delete,
    }


def instance_config(sandbox: SandboxServer, **keys: Any) -> str:
    """``[servicenow.sandbox]`` allowing the import set and, in another case, ``U_Servers``."""
    table = {
        "url": sandbox.url,
        "client_id": "bridgehead",
        "client_secret_env": SECRET_ENV,
        "max_requests_per_s": 1000,
        "tables": ["u_rows_import", "U_Servers"],
        **keys,
    }
    return "\n[servicenow.sandbox]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + "\n"


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    monkeypatch.setenv(SECRET_ENV, "bridgehead")
    server = SandboxServer(tmp_path / "sandbox", with_setup(SANDBOX_CONFIG)).start()
    yield server
    server.stop()


@pytest.fixture
def start_control(tmp_path: Path, sandbox: SandboxServer) -> Iterator[Callable[..., ControlPlane]]:
    started: list[ControlPlane] = []

    def start(**keys: Any) -> ControlPlane:
        workdir = tmp_path / f"cp{len(started)}"
        workdir.mkdir()
        control = ControlPlane(workdir, heartbeat_s=1.0, extra_config=instance_config(sandbox, **keys))
        started.append(control)
        return control.start()

    yield start
    for control in started:
        control.stop()


def relay(start_control: Callable[..., ControlPlane], agent_factory: Callable[..., Agent], **keys: Any) -> Api:
    control = start_control(**keys)
    agent = agent_factory(control, name=f"agent-{control.data_dir.parent.name}")
    api = control.api()
    wait_connected(api, [agent.name])
    return api


def wait_synced(api: Api, job_id: str) -> dict[str, Any]:
    """The job's delivery once it has ended (done or failed)."""
    assert "succeeded" == api.wait_done(job_id, timeout=scaled(60))["state"]

    def ended() -> dict[str, Any] | None:
        sync: dict[str, Any] = api.job(job_id)["sync"]
        return sync if sync["state"] in ("done", "failed") else None

    result: dict[str, Any] = wait_until(ended, scaled(60), f"delivery of job {job_id}")
    return result


def instance_requests(sandbox: SandboxServer) -> dict[str, int]:
    """Requests the sandbox counted, but for the test's own reads (its admin API and table reads;
    any delivery would show at least its OAuth token request and a write)."""
    counts: dict[str, int] = sandbox.stats()["by_endpoint"]
    return {endpoint: n for endpoint, n in counts.items() if endpoint not in ("GET sandbox", "GET table")}


def schedule(name: str, sink: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "cron": "0 3 * * *", "job": {"plugin": "echo", "params": {}, "sink": sink}}


def submit(api: Api, sink: dict[str, Any], records: list[dict[str, Any]] | None = None) -> tuple[int, Any]:
    return api.request(
        "POST", "/api/v1/jobs", {"plugin": "echo", "params": {"records": records or [{"id": 1}]}, "sink": sink}
    )


def test_a_job_to_an_allowed_import_set_delivers(
    start_control: Callable[..., ControlPlane], agent_factory: Callable[..., Agent], sandbox: SandboxServer
) -> None:
    """A sink naming an import set in ``tables`` delivers its records."""
    api = relay(start_control, agent_factory)
    status, job = submit(api, ALLOWED, [{"id": 1}, {"id": 2}])
    assert 201 == status, job
    sync = wait_synced(api, job["id"])
    assert ("done", 2) == (sync["state"], sync["inserted"]), sync
    assert {"1", "2"} == {row["u_id"] for row in sandbox.rows("u_rows", fields="u_id")}


def test_a_table_not_listed_is_refused_at_submit_and_never_reached(
    start_control: Callable[..., ControlPlane], agent_factory: Callable[..., Agent], sandbox: SandboxServer
) -> None:
    """A sink naming a table outside ``tables`` gets 422 ``invalid_sink`` and the instance sees nothing."""
    api = relay(start_control, agent_factory)
    before = instance_requests(sandbox)
    status, body = submit(api, FORBIDDEN)
    assert 422 == status, body
    assert "invalid_sink" == body["error"]["code"]
    message = body["error"]["message"]
    assert "'u_forbidden'" in message and "[servicenow.sandbox]" in message and "u_rows_import, U_Servers" in message
    assert [] == api.request("GET", "/api/v1/jobs")[1]["jobs"]
    assert before == instance_requests(sandbox)
    assert [] == sandbox.rows("u_forbidden")


def test_table_names_match_case_insensitively(
    start_control: Callable[..., ControlPlane], agent_factory: Callable[..., Agent], sandbox: SandboxServer
) -> None:
    """``U_Servers`` in ``tables`` allows the sink's ``u_servers``, as the instance reads names."""
    api = relay(start_control, agent_factory)
    status, job = submit(api, servers_sink("ignore"), [{"name": "srv-1"}])
    assert 201 == status, job
    assert ("done", 1) == tuple(wait_synced(api, job["id"])[k] for k in ("state", "inserted"))
    assert ["srv-1"] == [row["name"] for row in sandbox.rows("u_servers", fields="name")]


def test_on_delete_delete_is_refused_unless_the_instance_allows_it(
    start_control: Callable[..., ControlPlane], agent_factory: Callable[..., Agent], sandbox: SandboxServer
) -> None:
    """``on_delete = "delete"`` is 422 without ``allow_delete``; with it, the row is deleted."""
    strict = start_control().api()
    status, body = submit(strict, servers_sink("delete"))
    assert 422 == status, body
    assert "invalid_sink" == body["error"]["code"] and "allow_delete" in body["error"]["message"]
    status, job = submit(strict, servers_sink("deactivate"))
    assert 201 == status, job  # only deleting needs the permission

    assert 201 == sandbox.call("POST", "/api/now/table/u_servers", {"name": "srv-gone"})[0]
    assert ["srv-gone"] == [row["name"] for row in sandbox.rows("u_servers", fields="name")]
    api = relay(start_control, agent_factory, allow_delete=True)
    status, job = submit(api, servers_sink("delete"), [{"op": "delete", "name": "srv-gone"}])
    assert 201 == status, job
    sync = wait_synced(api, job["id"])
    assert ("done", 0) == (sync["state"], sync["errors"]), sync
    assert [] == sandbox.rows("u_servers", fields="name")


def test_a_schedule_with_a_forbidden_table_is_refused_at_creation(
    start_control: Callable[..., ControlPlane], sandbox: SandboxServer
) -> None:
    """Creating a schedule whose job's sink names a table outside ``tables`` is 422, and none is made."""
    api = start_control().api()
    status, created = api.request("POST", "/api/v1/schedules", schedule("nightly", ALLOWED))
    assert 201 == status, created
    status, body = api.request("POST", "/api/v1/schedules", schedule("bad", FORBIDDEN))
    assert 422 == status, body
    assert "invalid_sink" == body["error"]["code"] and "u_forbidden" in body["error"]["message"]
    assert ["nightly"] == [s["name"] for s in api.request("GET", "/api/v1/schedules")[1]["schedules"]]


def test_a_job_stored_before_the_list_changed_is_refused_at_delivery(
    start_control: Callable[..., ControlPlane], agent_factory: Callable[..., Agent], sandbox: SandboxServer
) -> None:
    """A queued job whose table was removed from ``tables`` by a restart fails its delivery, writing nothing."""
    control = start_control()
    agent = agent_factory(control, start=False)
    status, job = submit(control.api(), ALLOWED)
    assert (201, "queued") == (status, job["state"]), job
    control.stop()
    control.config.write_text(control.config.read_text().replace('"u_rows_import", ', ""))
    control.start()
    agent.start()
    api = control.api()
    before = instance_requests(sandbox)
    sync = wait_synced(api, job["id"])
    assert ("failed", "invalid_sink") == (sync["state"], sync["error"]["code"]), sync
    assert "'u_rows_import'" in sync["error"]["message"], sync
    assert before == instance_requests(sandbox)
    assert [] == sandbox.rows("u_rows")


def test_an_instance_without_tables_stops_the_control_plane_at_start(tmp_path: Path) -> None:
    """``[servicenow.NAME]`` without ``tables`` is a configuration error naming the key, before any job."""
    config = tmp_path / "control.toml"
    config.write_text(
        '[servicenow.corp]\nurl = "https://corp.service-now.com"\nclient_id = "x"\nclient_secret_env = "HOME"\n'
    )
    serve = [sys.executable, "-m", "bridgehead.control.cli", "serve", "--config", str(config)]
    result = subprocess.run(
        [*serve, "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert 2 == result.returncode, result.stderr
    assert "servicenow.corp.tables: required" in result.stderr
