"""Sinks into ServiceNow, end to end: a real control plane and agent, PostgreSQL through
ODBC, and the ServiceNow stand-in (``bridgehead-sandbox``, a real HTTP server; no real
instance can run here). Records land exactly once, survive outages, rate limits and a
control plane killed mid-delivery, and bad credentials or rejected records are reported."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.harness import Agent, Api, ControlPlane, scaled, wait_connected, wait_until
from bridgehead_testing.sandbox_server import SandboxServer, with_setup

PG = "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=test"
AGENT_PROFILES = f"""
[connections.pg]
plugin = "sql"
connection_string = "{PG}"
credential = "pg"

[credentials.pg]
username = "root"
"""
SANDBOX_CONFIG = """
[transforms.u_rows_import]
target = "u_rows"
coalesce = ["u_id"]
display_field = "u_name"
reject_if = "u_nameSTARTSWITHbad"
reject_message = "the transform rejects names starting with bad"
[transforms.u_rows_import.fields]
u_id = "u_id"
u_name = "u_name"
"""
SECRET_ENV = "BH_TEST_SN_SECRET"  # noqa: S105 - the name of a variable, not a secret


def instance_config(sandbox: SandboxServer, **keys: Any) -> str:
    """The control plane's [servicenow.sandbox] table: OAuth client credentials unless ``keys``
    say otherwise."""
    table: dict[str, Any] = {
        "url": sandbox.url,
        "tables": ["u_rows_import", "u_servers"],
        "auth": "oauth_client_credentials",
        "client_id": "bridgehead",
        "client_secret_env": SECRET_ENV,
        **keys,
    }
    lines = [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    return "\n[servicenow.sandbox]\n" + "\n".join(lines) + "\n"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path / "sandbox", with_setup(SANDBOX_CONFIG)).start()
    yield server
    server.stop()


@pytest.fixture
def relay(
    tmp_path: Path,
    sandbox: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
    agent_factory: Callable[..., Agent],
) -> Iterator[tuple[ControlPlane, Api]]:
    monkeypatch.setenv(SECRET_ENV, "bridgehead")
    (tmp_path / "cp").mkdir()
    # No client-side pacing here (the default is 20 requests/s): these tests are about outcomes.
    config = instance_config(sandbox, max_requests_per_s=1000)
    control = ControlPlane(tmp_path / "cp", heartbeat_s=1.0, extra_config=config).start()
    agent = agent_factory(control, extra=AGENT_PROFILES)
    api = control.api()
    wait_connected(api, [agent.name])
    yield control, api
    control.stop()


def rows_query(count: int, name: str = "name") -> str:
    return f"SELECT g AS id, '{name}-' || g AS name FROM generate_series(1, {count}) g ORDER BY g"  # noqa: S608


IMPORT_SINK = {"servicenow": "sandbox", "import_set": "u_rows_import", "map": {"u_id": "id", "u_name": "name"}}


def wait_synced(api: Api, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """The job's view once its delivery has ended (done or failed)."""
    job = api.wait_done(job_id, timeout=scaled(timeout))
    assert "succeeded" == job["state"], job

    def ended() -> dict[str, Any] | None:
        view = api.job(job_id)
        return view if view["sync"]["state"] in ("done", "failed") else None

    result: dict[str, Any] = wait_until(ended, scaled(timeout), f"delivery of job {job_id}")
    return result


def test_fifty_thousand_rows_land_once_and_a_rerun_updates(
    relay: tuple[ControlPlane, Api], sandbox: SandboxServer
) -> None:
    _control, api = relay
    count = 50_000
    job = api.submit("sql", {"connection": "pg", "query": rows_query(count)}, sink=IMPORT_SINK)
    assert "waiting" == job["sync"]["state"] or job["sync"]["state"] in ("pending", "delivering")
    view = wait_synced(api, job["id"])
    sync = view["sync"]
    assert {"state": "done", "inserted": count, "updated": 0, "ignored": 0, "skipped": 0, "errors": 0} == {
        k: sync[k] for k in ("state", "inserted", "updated", "ignored", "skipped", "errors")
    }, sync
    rows = sandbox.rows("u_rows", fields="u_id,u_name")
    assert count == len(rows)
    assert {str(i) for i in range(1, count + 1)} == {r["u_id"] for r in rows}

    # The same job again, with changed names: every row updated, none added.
    again = api.submit("sql", {"connection": "pg", "query": rows_query(count, "renamed")}, sink=IMPORT_SINK)
    sync = wait_synced(api, again["id"])["sync"]
    assert (0, count, 0) == (sync["inserted"], sync["updated"], sync["errors"]), sync
    rows = sandbox.rows("u_rows", fields="u_id,u_name")
    assert count == len(rows)
    assert all(r["u_name"] == f"renamed-{r['u_id']}" for r in rows)


def test_a_record_the_transform_rejects_is_listed_and_the_others_land(
    relay: tuple[ControlPlane, Api], sandbox: SandboxServer
) -> None:
    _control, api = relay
    query = (
        "SELECT g AS id, CASE WHEN g % 10 = 0 THEN 'bad-' ELSE 'good-' END || g AS name FROM generate_series(1, 50) g"
    )
    job = api.submit("sql", {"connection": "pg", "query": query}, sink=IMPORT_SINK)
    sync = wait_synced(api, job["id"])["sync"]
    assert ("done", 45, 5) == (sync["state"], sync["inserted"], sync["errors"]), sync
    status, body = api.request("GET", f"/api/v1/jobs/{job['id']}/sync/errors")
    assert 200 == status, body
    assert [10, 20, 30, 40, 50] == [e["seq"] for e in body["errors"]]
    assert all("rejects names starting with bad" in e["message"] for e in body["errors"]), body
    assert {"id": 10, "name": "bad-10"} == body["errors"][0]["record"]
    assert 45 == len(sandbox.rows("u_rows"))


def test_a_table_sink_upserts_by_coalesce(relay: tuple[ControlPlane, Api], sandbox: SandboxServer) -> None:
    _control, api = relay
    sink = {
        "servicenow": "sandbox",
        "table": "u_servers",
        "coalesce": ["name"],
        "map": {"name": "name", "u_number": "id"},
        "passthrough": False,
    }
    job = api.submit("sql", {"connection": "pg", "query": rows_query(300)}, sink=sink)
    sync = wait_synced(api, job["id"])["sync"]
    assert (300, 0, 0) == (sync["inserted"], sync["updated"], sync["errors"]), sync
    query = "SELECT g AS id, 'name-' || (g % 300 + 1) AS name FROM generate_series(1, 300) g ORDER BY g"
    again = api.submit("sql", {"connection": "pg", "query": query}, sink=sink)
    sync = wait_synced(api, again["id"])["sync"]
    assert (0, 300, 0) == (sync["inserted"], sync["updated"], sync["errors"]), sync
    rows = sandbox.rows("u_servers", fields="name,u_number")
    assert 300 == len(rows) == len({r["name"] for r in rows})


def test_a_sink_naming_no_configured_instance_is_refused_at_submit(relay: tuple[ControlPlane, Api]) -> None:
    _control, api = relay
    status, body = api.request(
        "POST",
        "/api/v1/jobs",
        {
            "plugin": "sql",
            "params": {"connection": "pg", "query": "SELECT 1"},
            "sink": {"servicenow": "nope", "import_set": "u_x"},
        },
    )
    assert 422 == status and "invalid_sink" == body["error"]["code"], body
    assert "nope" in body["error"]["message"] and "sandbox" in body["error"]["message"]
    status, body = api.request(
        "POST",
        "/api/v1/jobs",
        {
            "plugin": "sql",
            "params": {"connection": "pg", "query": "SELECT 1"},
            "sink": {"servicenow": "sandbox", "table": "u_x"},
        },
    )
    assert 422 == status and "coalesce" in body["error"]["message"], body


# --- rate limits, outages, a control plane killed mid-delivery --------------------------------


_STARTED: list[ControlPlane] = []


@pytest.fixture(autouse=True)
def _stop_control_planes() -> Iterator[None]:
    yield
    while _STARTED:
        _STARTED.pop().stop()


def start_relay(
    tmp_path: Path, agent_factory: Callable[..., Agent], sandbox: SandboxServer, **instance: Any
) -> tuple[ControlPlane, Api]:
    workdir = tmp_path / f"cp-{len(list(tmp_path.glob('cp-*')))}"
    workdir.mkdir()
    control = ControlPlane(workdir, heartbeat_s=1.0, extra_config=instance_config(sandbox, **instance))
    _STARTED.append(control)
    control.start()
    agent = agent_factory(control, extra=AGENT_PROFILES, name=f"agent-{workdir.name}")
    wait_connected(control.api(), [agent.name])
    return control, control.api()


def assert_landed_once(sandbox: SandboxServer, count: int) -> None:
    rows = sandbox.rows("u_rows", fields="u_id")
    ids = [r["u_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a row landed twice"
    assert {str(i) for i in range(1, count + 1)} == set(ids)


def metric_values(control: ControlPlane) -> dict[str, float]:
    text = control.metrics()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def wait_delivering(api: Api, job_id: str, least: int) -> None:
    def far_enough() -> bool:
        sync = api.job(job_id)["sync"]
        return sync["state"] == "delivering" and sync["delivered"] >= least

    wait_until(far_enough, scaled(60), f"job {job_id} delivering past {least} records", interval=0.1)


def test_a_rate_limit_of_five_per_second_slows_delivery_and_loses_nothing(
    tmp_path: Path, agent_factory: Callable[..., Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "bridgehead")
    sandbox = SandboxServer(
        tmp_path / "sandbox",
        with_setup(SANDBOX_CONFIG, '[rate_limit]\nrequests = 5\nper_seconds = 1\nscope = "global"\n'),
    ).start()
    try:
        control, api = start_relay(tmp_path, agent_factory, sandbox, batch_size=50, max_in_flight=4)
        job = api.submit("sql", {"connection": "pg", "query": rows_query(2000)}, sink=IMPORT_SINK)
        sync = wait_synced(api, job["id"])["sync"]
        assert ("done", 2000, 0) == (sync["state"], sync["inserted"], sync["errors"]), sync
        assert_landed_once(sandbox, 2000)
        statuses = sandbox.stats()["by_status"]
        assert statuses.get("429", 0) > 0, statuses  # the limit did bite, and was waited out
        metrics = metric_values(control)
        assert metrics['bridgehead_sink_records_total{instance="sandbox",outcome="inserted"}'] == 2000
        # (the sandbox also counts this test's own reads that it rate-limited)
        assert 0 < metrics['bridgehead_sink_responses_total{instance="sandbox",status="429"}'] <= statuses["429"]
        assert metrics['bridgehead_sink_deliveries_total{instance="sandbox",state="done"}'] == 1
        control.stop()
    finally:
        sandbox.stop()


def test_an_instance_down_for_thirty_seconds_mid_delivery(
    tmp_path: Path, agent_factory: Callable[..., Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "bridgehead")
    sandbox = SandboxServer(tmp_path / "sandbox", with_setup(SANDBOX_CONFIG, "[faults]\nlatency_ms = 40\n")).start()
    try:
        control, api = start_relay(tmp_path, agent_factory, sandbox, batch_size=50, backoff_max_s=4.0)
        count = 6000
        job = api.submit("sql", {"connection": "pg", "query": rows_query(count)}, sink=IMPORT_SINK)
        api.wait_done(job["id"], timeout=scaled(60))
        wait_delivering(api, job["id"], 500)
        sandbox.stop()  # the whole instance goes away: connections refused
        time.sleep(30)  # the outage itself, the condition under test: not a wait for an event
        assert "delivering" == api.job(job["id"])["sync"]["state"]  # waiting it out, not failed
        sandbox.start()
        sync = wait_synced(api, job["id"])["sync"]
        assert ("done", 0) == (sync["state"], sync["errors"]), sync
        assert count == sync["inserted"] + sync["ignored"] + sync["updated"], sync
        assert_landed_once(sandbox, count)
        control.stop()
    finally:
        sandbox.stop()


def test_a_control_plane_killed_mid_delivery_resumes_from_its_cursor(
    tmp_path: Path, agent_factory: Callable[..., Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "bridgehead")
    sandbox = SandboxServer(tmp_path / "sandbox", with_setup(SANDBOX_CONFIG, "[faults]\nlatency_ms = 40\n")).start()
    try:
        control, api = start_relay(tmp_path, agent_factory, sandbox, batch_size=50)
        count = 6000
        job = api.submit("sql", {"connection": "pg", "query": rows_query(count)}, sink=IMPORT_SINK)
        api.wait_done(job["id"], timeout=scaled(60))
        wait_delivering(api, job["id"], 1000)
        control.kill9()
        posted_before = sandbox.stats()["by_endpoint"].get("POST import.insertMultiple", 0)
        control.start()
        api = control.api()
        sync = wait_synced(api, job["id"])["sync"]
        assert ("done", 0) == (sync["state"], sync["errors"]), sync
        # Each batch counted once: re-sent in-flight batches come back ignored, not inserted twice.
        assert count == sync["inserted"] + sync["ignored"] + sync["updated"], sync
        assert_landed_once(sandbox, count)
        posted_after = sandbox.stats()["by_endpoint"]["POST import.insertMultiple"]
        # Resumed, not restarted: far fewer than all 120 batches were posted after the restart.
        assert posted_after - posted_before < count // 50 - 10, (posted_before, posted_after)
        control.stop()
    finally:
        sandbox.stop()


# --- credentials ----------------------------------------------------------------------------


def test_a_wrong_client_secret_fails_the_delivery_clearly(
    tmp_path: Path, agent_factory: Callable[..., Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "not-the-secret")
    sandbox = SandboxServer(tmp_path / "sandbox", with_setup(SANDBOX_CONFIG)).start()
    try:
        control, api = start_relay(tmp_path, agent_factory, sandbox)
        job = api.submit("sql", {"connection": "pg", "query": rows_query(10)}, sink=IMPORT_SINK)
        sync = wait_synced(api, job["id"])["sync"]
        assert ("failed", "auth_failed") == (sync["state"], sync["error"]["code"]), sync
        assert "client credentials" in sync["error"]["message"], sync
        assert "not-the-secret" not in control.log_text()
        assert [] == sandbox.rows("u_rows")
        # Retrying with the secret still wrong fails the same way, and says so.
        status, body = api.request("POST", f"/api/v1/jobs/{job['id']}/sync/retry")
        assert 202 == status, body
        assert "failed" == wait_synced(api, job["id"])["sync"]["state"]
        # The retry is a change: the audit log names who asked for it, and for which job.
        status, page = api.request("GET", "/api/v1/audit?action=sync.retry&limit=10")
        assert 200 == status, page
        [entry] = page["entries"]
        assert job["id"] == entry["detail"]["job"], entry
        assert entry["actor"], entry
        control.stop()
    finally:
        sandbox.stop()


def oauth_password_grant(sandbox: SandboxServer) -> str:
    import json  # noqa: PLC0415
    import urllib.parse  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    form = urllib.parse.urlencode(
        {"grant_type": "password", "client_id": "bridgehead", "client_secret": "bridgehead", "username": "admin",
         "password": "admin"}
    ).encode()  # fmt: skip
    with urllib.request.urlopen(sandbox.url + "/oauth_token.do", data=form) as response:  # noqa: S310 - loopback
        token: str = json.loads(response.read())["refresh_token"]
    return token


def test_rotated_refresh_tokens_are_kept_across_a_restart(
    tmp_path: Path, agent_factory: Callable[..., Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = with_setup(SANDBOX_CONFIG, "[oauth]\naccess_token_ttl_s = 2\nrotate_refresh_tokens = true\n")
    sandbox = SandboxServer(tmp_path / "sandbox", config).start()
    try:
        token_file = tmp_path / "refresh_token"
        token_file.write_text(oauth_password_grant(sandbox))
        monkeypatch.setenv(SECRET_ENV, "bridgehead")
        control, api = start_relay(
            tmp_path, agent_factory, sandbox, auth="oauth_refresh_token", refresh_token_file=str(token_file)
        )
        first = api.submit("sql", {"connection": "pg", "query": rows_query(100)}, sink=IMPORT_SINK)
        assert ("done", 100) == tuple(wait_synced(api, first["id"])["sync"][k] for k in ("state", "inserted"))
        time.sleep(2.5)  # the access token expires: the next delivery refreshes (and rotates)
        second = api.submit("sql", {"connection": "pg", "query": rows_query(200)}, sink=IMPORT_SINK)
        assert "done" == wait_synced(api, second["id"])["sync"]["state"]
        # The configured token has been rotated away; only the stored one works now.
        control.stop()
        control.start()
        api = control.api()
        third = api.submit("sql", {"connection": "pg", "query": rows_query(300)}, sink=IMPORT_SINK)
        sync = wait_synced(api, third["id"])["sync"]
        assert ("done", 100) == (sync["state"], sync["inserted"]), sync
        assert_landed_once(sandbox, 300)
        control.stop()
    finally:
        sandbox.stop()


def test_an_expired_refresh_token_fails_the_delivery_clearly(
    tmp_path: Path, agent_factory: Callable[..., Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = SandboxServer(
        tmp_path / "sandbox", with_setup(SANDBOX_CONFIG, "[oauth]\nrefresh_token_ttl_s = 1\n")
    ).start()
    try:
        token_file = tmp_path / "refresh_token"
        token_file.write_text(oauth_password_grant(sandbox))
        time.sleep(1.5)  # the refresh token outlives its 1 s TTL: the passing of time is the condition
        monkeypatch.setenv(SECRET_ENV, "bridgehead")
        control, api = start_relay(
            tmp_path, agent_factory, sandbox, auth="oauth_refresh_token", refresh_token_file=str(token_file)
        )
        job = api.submit("sql", {"connection": "pg", "query": rows_query(10)}, sink=IMPORT_SINK)
        sync = wait_synced(api, job["id"])["sync"]
        assert ("failed", "auth_failed") == (sync["state"], sync["error"]["code"]), sync
        assert "refresh token" in sync["error"]["message"], sync
        control.stop()
    finally:
        sandbox.stop()


# --- instances of other kinds ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_section", "keys"),
    [
        # An instance without insertMultiple: one POST per record, learned on the first batch.
        ('[instance]\ninsert_multiple = "unsupported"\n', {}),
        # insertMultiple answered as documented, asynchronously: outcomes read from the staging rows.
        ('[instance]\ninsert_multiple = "async"\n', {}),
        # Basic auth instead of OAuth.
        ("", {"auth": "basic", "username": "admin", "password_env": SECRET_ENV}),
        # Every 3rd request dropped and every 5th answered 503: retried, nothing lost or doubled.
        ("[faults]\ndrop_every = 3\nerror_every = 5\n", {"backoff_max_s": 0.5}),
    ],
    ids=["no-insert-multiple", "async-insert-multiple", "basic-auth", "drops-and-5xx"],
)
def test_other_instances_get_every_record_once(
    tmp_path: Path,
    agent_factory: Callable[..., Agent],
    monkeypatch: pytest.MonkeyPatch,
    instance_section: str,
    keys: dict[str, Any],
) -> None:
    monkeypatch.setenv(SECRET_ENV, "admin" if keys.get("auth") == "basic" else "bridgehead")
    sandbox = SandboxServer(tmp_path / "sandbox", with_setup(SANDBOX_CONFIG, instance_section)).start()
    try:
        _control, api = start_relay(tmp_path, agent_factory, sandbox, batch_size=40, **keys)
        query = (
            "SELECT g AS id, CASE WHEN g = 7 THEN 'bad-' ELSE 'good-' END || g AS name FROM generate_series(1, 300) g"
        )
        job = api.submit("sql", {"connection": "pg", "query": query}, sink=IMPORT_SINK)
        sync = wait_synced(api, job["id"])["sync"]
        assert ("done", 1) == (sync["state"], sync["errors"]), sync
        assert 299 == sync["inserted"] + sync["ignored"] + sync["updated"], sync
        status, body = api.request("GET", f"/api/v1/jobs/{job['id']}/sync/errors")
        assert [7] == [e["seq"] for e in body["errors"]], body
        rows = sandbox.rows("u_rows", fields="u_id")
        assert sorted(str(i) for i in range(1, 301) if i != 7) == sorted(r["u_id"] for r in rows)
        stats = sandbox.stats()
        if "faults" in instance_section:  # the faults did happen, and were retried through
            assert stats["dropped"] > 0 and stats["by_status"].get("503", 0) > 0, stats
        if "unsupported" in instance_section:  # learned once, then one POST per record
            assert 1 == stats["by_status"].get("400", 0), stats
    finally:
        sandbox.stop()
