"""The preflight of a ServiceNow instance (``bridgehead-control servicenow check`` and
``POST /api/v1/servicenow/{name}/check``) against the sandbox run as an instance would be set
up: tables and fields defined in its config, the client credentials grant enabled. Real
processes: the sandbox, the CLI, the control plane; the sandbox's tables are read back to show
that a preflight writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from bridgehead_testing.harness import ControlPlane, scaled
from bridgehead_testing.sandbox_server import SandboxServer

SECRET_ENV = "BH_TEST_PREFLIGHT_SECRET"  # noqa: S105 - the name of a variable, not a secret
WRONG_ENV = "BH_TEST_PREFLIGHT_WRONG"
# An instance as docs/servicenow-setup.md has an admin set it up, except that sys_user_group
# has no u_directory_id (what the ldap_groups preset needs), so one preset passes and one fails.
SANDBOX_CONFIG = """
[oauth]
client_credentials = true

[tables.u_servers]
label = "Servers"
[tables.u_servers.fields.u_name]
max_length = 100
[tables.u_servers.fields.u_ip]
label = "IP"

[tables.u_rows_import]
label = "Rows import"
extends = "sys_import_set_row"
[tables.u_rows_import.fields.u_id]
label = "ID"
[tables.u_rows_import.fields.u_name]
label = "Name"

[tables.u_names_import]
label = "Names import"
extends = "sys_import_set_row"
[tables.u_names_import.fields.u_id]
label = "ID"

[tables.sys_user]
label = "User"
[tables.sys_user.fields.u_directory_id]
label = "Directory ID"
max_length = 40

[transforms.u_rows_import]
target = "u_servers"
coalesce = ["u_name"]
[transforms.u_rows_import.fields]
u_name = "u_name"
"""
TABLES = ["u_rows_import", "u_names_import", "u_servers", "sys_user", "sys_user_group", "sys_user_grmember"]
TABLE_SINK = {"table": "u_servers", "coalesce": ["u_name"], "map": {"u_name": "host", "u_ip": "ip"}}


def instance_table(name: str, sandbox: SandboxServer, secret_env: str) -> str:
    keys: dict[str, Any] = {
        "url": sandbox.url,
        "tables": TABLES,
        "auth": "oauth_client_credentials",
        "client_id": "bridgehead",
        "client_secret_env": secret_env,
        "max_requests_per_s": 1000,
    }
    return f"\n[servicenow.{name}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in keys.items()) + "\n"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    server = SandboxServer(tmp_path_factory.mktemp("preflight") / "sandbox", SANDBOX_CONFIG).start()
    status, body = server.call("POST", "/api/now/table/u_servers", {"u_name": "web-1", "u_ip": "10.0.0.1"})
    assert 201 == status, body
    # u_names_import is set up for column names (docs/servicenow-setup.md), u_rows_import is not.
    setup = {"source_table": "u_names_import", "column_mapping": "Column name"}
    status, body = server.call("POST", "/api/now/table/sys_rest_insert_multiple", setup)
    assert 201 == status, body
    yield server
    server.stop()


@pytest.fixture(scope="module")
def environment() -> Iterator[dict[str, str]]:
    saved = {k: os.environ.get(k) for k in (SECRET_ENV, WRONG_ENV)}
    os.environ[SECRET_ENV] = "bridgehead"  # the sandbox's client secret
    os.environ[WRONG_ENV] = "not-the-secret"
    yield dict(os.environ)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def control(
    tmp_path_factory: pytest.TempPathFactory, sandbox: SandboxServer, environment: dict[str, str]
) -> Iterator[ControlPlane]:
    config = instance_table("sandbox", sandbox, SECRET_ENV) + instance_table("wrong", sandbox, WRONG_ENV)
    plane = ControlPlane(tmp_path_factory.mktemp("preflight-cp"), extra_config=config).start()
    yield plane
    plane.stop()


def check(control: ControlPlane, name: str, *extra: str) -> tuple[int, str, str]:
    """``bridgehead-control servicenow check NAME`` as its own process: (exit code, out, err)."""
    argv = [sys.executable, "-m", "bridgehead.control.cli", "servicenow", "check", name]
    argv += ["--config", str(control.config), *extra]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(120), check=False)  # noqa: S603
    return done.returncode, done.stdout, done.stderr


def check_json(control: ControlPlane, name: str, *extra: str) -> tuple[int, dict[str, Any]]:
    code, out, err = check(control, name, "--json", *extra)
    assert code in (0, 1), (code, out, err)
    report: dict[str, Any] = json.loads(out)
    return code, report


def row(report: dict[str, Any], check_name: str, target: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in report["checks"] if (c["check"], c["target"]) == (check_name, target)]
    assert 1 == len(found), (check_name, target, report["checks"])
    return found[0]


def written(sandbox: SandboxServer) -> tuple[int, int]:
    """What a preflight must never change: the target's rows and the import sets."""
    return len(sandbox.rows("u_servers")), len(sandbox.rows("sys_import_set"))


def test_an_instance_set_up_right_passes_and_nothing_is_written(control: ControlPlane, sandbox: SandboxServer) -> None:
    before = written(sandbox)
    code, report = check_json(control, "sandbox", "--sink", json.dumps(TABLE_SINK))
    assert 0 == code, report
    assert report["ok"] is True
    assert "ok" == row(report, "auth", "oauth_client_credentials")["status"]
    assert "ok" == row(report, "dictionary", "sys_db_object, sys_dictionary")["status"]
    assert "ok" == row(report, "rate limit", "GET /api/now/table")["status"]
    table = row(report, "table", "u_servers")
    assert "ok" == table["status"] and "has rows" in table["detail"], table
    coalesce = row(report, "coalesce", "u_servers.u_name")
    assert "ok" == coalesce["status"], coalesce
    assert "string(100)" in coalesce["detail"] and "; readable" in coalesce["detail"], coalesce
    assert "ok" == row(report, "field", "u_servers.u_ip")["status"]
    staging = row(report, "insertMultiple", "sys_rest_insert_multiple u_rows_import")
    assert "ok" == staging["status"] and "labels" in staging["detail"], staging
    named = row(report, "insertMultiple", "sys_rest_insert_multiple u_names_import")
    assert "ok" == named["status"] and "columns by name" in named["detail"], named
    assert "ok" == row(report, "coalesce", "sys_user.u_directory_id")["status"]
    # The ldap_groups preset is allowed by tables but cannot work: a warning, which does not fail.
    group_id = row(report, "coalesce", "sys_user_group.u_directory_id")
    assert "warn" == group_id["status"] and "u_directory_id" in group_id["fix"], group_id
    assert before == written(sandbox)

    code, text, _err = check(control, "sandbox")
    assert 0 == code, text
    assert text.rstrip().splitlines()[-1].startswith("ok"), text
    assert "STATUS" in text.splitlines()[0]


def test_a_wrong_secret_fails_the_auth_row(control: ControlPlane) -> None:
    code, report = check_json(control, "wrong")
    assert 1 == code
    auth = row(report, "auth", "oauth_client_credentials")
    assert "fail" == auth["status"], auth
    assert "refused" in auth["detail"], auth
    assert "glide.oauth.inbound.client.credential.grant_type.enabled" in auth["fix"], auth
    code, text, _err = check(control, "wrong")
    assert 1 == code and "FAIL" in text and "fix: " in text, text


def test_a_missing_coalesce_field_is_named(control: ControlPlane, sandbox: SandboxServer) -> None:
    before = written(sandbox)
    sink = {"table": "u_servers", "coalesce": ["u_nope"], "map": {"u_nope": "host"}}
    code, report = check_json(control, "sandbox", "--sink", json.dumps(sink))
    assert 1 == code and report["ok"] is False
    missing = row(report, "coalesce", "u_servers.u_nope")
    assert "fail" == missing["status"] and "missing" in missing["detail"], missing
    assert "add a string field u_nope" in missing["fix"], missing
    assert before == written(sandbox)


def test_the_fields_a_preset_needs_are_named(control: ControlPlane) -> None:
    code, report = check_json(control, "sandbox", "--sink", '{"preset": "ldap_groups"}')
    assert 1 == code
    missing = row(report, "coalesce", "sys_user_group.u_directory_id")
    assert "fail" == missing["status"], missing
    assert "40 characters" in missing["fix"], missing
    # Every other field the preset writes exists on the instance.
    assert "ok" == row(report, "field", "sys_user_grmember.group")["status"]
    code, report = check_json(control, "sandbox", "--sink", '{"preset": "ldap_users"}')
    assert 0 == code, report
    assert "ok" == row(report, "coalesce", "sys_user.u_directory_id")["status"]


def test_the_api_is_for_admins_and_returns_the_same_rows(control: ControlPlane) -> None:
    api = control.api()
    operator = control.token("operator")
    path = "/api/v1/servicenow/sandbox/check"
    status, body = api.request("POST", path, {"sink": TABLE_SINK}, token=operator)
    assert 403 == status, body
    status, body = api.request("POST", path, {"sink": TABLE_SINK})
    assert 200 == status, body
    _code, report = check_json(control, "sandbox", "--sink", json.dumps(TABLE_SINK))
    assert report == body
    status, body = api.request("POST", "/api/v1/servicenow/wrong/check")  # no body: the configuration only
    assert 200 == status and body["ok"] is False, body
    status, body = api.request("POST", "/api/v1/servicenow/nope/check")
    assert 404 == status and "servicenow.nope" in body["error"]["message"], body
    status, body = api.request("POST", path, {"sink": {"table": "u_servers"}})
    assert 422 == status and "invalid_sink" == body["error"]["code"], body
    status, body = api.request("GET", "/api/v1/audit?action=servicenow.check")
    assert 200 == status and body["entries"], body


def test_a_rate_limit_rule_under_the_configured_pace_warns(control: ControlPlane, sandbox: SandboxServer) -> None:
    status, body = sandbox.call("POST", "/sandbox/rate_limit", {"requests": 36_000, "per_seconds": 3600})
    assert 200 == status, body
    try:
        code, report = check_json(control, "sandbox")
    finally:
        sandbox.call("POST", "/sandbox/rate_limit", {"requests": 0})
    assert 0 == code, report  # a warning does not fail
    limit = row(report, "rate limit", "GET /api/now/table")
    assert "warn" == limit["status"] and "36000 requests per hour (10.00/s)" in limit["detail"], limit
    assert "max_requests_per_s = 10.00" in limit["fix"], limit


def test_bad_usage_exits_2_with_the_reason(control: ControlPlane) -> None:
    code, _out, err = check(control, "nope")
    assert 2 == code
    assert "no [servicenow.nope]" in err and "sandbox" in err, err
    code, _out, err = check(control, "sandbox", "--sink", "{not json")
    assert 2 == code and "--sink" in err, err
    code, _out, err = check(control, "sandbox", "--sink", '{"table": "u_servers"}')
    assert 2 == code and "coalesce" in err, err
