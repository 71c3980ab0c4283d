"""LDAP into ServiceNow's users and groups, end to end, from schedules: a real slapd, control
plane and agent, and the ServiceNow stand-in (``bridgehead-sandbox``; no real instance can
run here). The ready-made ``ldap_users`` and ``ldap_groups`` sinks fill ``sys_user``,
``sys_user_group`` and ``sys_user_grmember``; after changes in the directory, the next runs
update, add and deactivate exactly what changed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.harness import Agent, Api, ControlPlane, scaled, wait_connected, wait_until
from bridgehead_testing.ldap_data import group_dn, person_dn
from bridgehead_testing.sandbox_server import SandboxServer, with_setup
from bridgehead_testing.slapd import Slapd

SECRET_ENV = "BH_TEST_SN_SECRET"  # noqa: S105 - the name of a variable, not a secret


def ldap_profile(server: Slapd) -> str:
    return (
        f'[connections.dir]\nplugin = "ldap"\nurl = "{server.url}"\ncredential = "reader"\n\n'
        f'[credentials.reader]\nusername = "{server.reader_dn}"\npassword = "{server.reader_password}"\n'
    )


@pytest.fixture
def relay(
    tmp_path: Path, slapd: Slapd, agent_factory: Callable[..., Agent], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Api, SandboxServer]]:
    monkeypatch.setenv(SECRET_ENV, "bridgehead")
    sandbox = SandboxServer(tmp_path / "sandbox", with_setup()).start()
    (tmp_path / "cp").mkdir()
    table = {
        "url": sandbox.url,
        "tables": ["sys_user", "sys_user_group", "sys_user_grmember"],
        "client_id": "bridgehead",
        "client_secret_env": SECRET_ENV,
    }
    extra = "\n[servicenow.corp]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + "\n"
    control = ControlPlane(tmp_path / "cp", heartbeat_s=1.0, extra_config=extra).start()
    try:
        agent = agent_factory(control, extra=ldap_profile(slapd))
        api = control.api()
        wait_connected(api, [agent.name])
        yield api, sandbox
    finally:
        control.stop()
        sandbox.stop()


def schedule(api: Api, name: str, base: str, filter_: str, preset: str) -> None:
    body = {
        "name": name,
        "cron": "0 3 * * *",
        "timezone": "Europe/Paris",
        "job": {
            "plugin": "ldap",
            "params": {"connection": "dir", "base": base, "filter": filter_, "mode": "sync", "sync": name},
            "sink": {"servicenow": "corp", "preset": preset},
        },
    }
    status, answer = api.request("POST", "/api/v1/schedules", body)
    assert 201 == status, answer


def run(api: Api, name: str) -> dict[str, Any]:
    """Run the schedule now; the job's sync counts once delivered."""
    status, job = api.request("POST", f"/api/v1/schedules/{name}/run")
    assert 201 == status, job
    done = api.wait_done(job["id"], timeout=scaled(60))
    assert "succeeded" == done["state"], done

    def delivered() -> dict[str, Any] | None:
        sync: dict[str, Any] = api.job(job["id"])["sync"]
        return sync if sync["state"] in ("done", "failed") else None

    sync: dict[str, Any] = wait_until(delivered, scaled(60), f"delivery of {name}")
    assert ("done", 0) == (sync["state"], sync["errors"]), sync
    return sync


def counts(sync: dict[str, Any]) -> tuple[int, int, int]:
    return sync["inserted"], sync["updated"], sync["ignored"]


def test_ldap_sync_schedules_fill_users_and_groups_then_apply_exactly_the_changes(
    relay: tuple[Api, SandboxServer], slapd: Slapd
) -> None:
    api, sandbox = relay
    schedule(api, "users", f"ou=people,{slapd.suffix}", "(objectClass=inetOrgPerson)", "ldap_users")
    schedule(api, "groups", f"ou=groups,{slapd.suffix}", "(objectClass=groupOfNames)", "ldap_groups")

    assert (30, 0, 0) == counts(run(api, "users"))
    groups = run(api, "groups")
    users = {u["user_name"]: u for u in sandbox.rows("sys_user")}
    assert {f"user{i:05d}" for i in range(1, 31)} == set(users)
    alice = users["user00001"]
    assert ("true", f"ldap:{person_dn(1, slapd.suffix)}") == (alice["active"], alice["source"])
    group_rows = {g["name"]: g for g in sandbox.rows("sys_user_group")}
    assert groups["inserted"] == len(group_rows) and "small" in group_rows
    small = group_rows["small"]["sys_id"]
    by_id = {u["sys_id"]: u["user_name"] for u in users.values()}
    members = {by_id.get(m["user"]) for m in sandbox.rows("sys_user_grmember", f"group={small}")}
    assert {f"user{i:05d}" for i in range(1, 11)} == members

    # Changes in the directory: 4 modified, 2 added, 3 deleted, one member out of "small".
    for i in range(1, 5):
        slapd.replace(person_dn(i, slapd.suffix), "mail", [f"new-{i}@example.com"])
    for i in (201, 202):
        slapd.add(
            person_dn(i, slapd.suffix),
            {"objectClass": ["inetOrgPerson"], "uid": f"user{i:05d}", "cn": "New", "sn": f"Person{i}"},
        )
    for i in (28, 29, 30):
        slapd.delete(person_dn(i, slapd.suffix))
    slapd.replace(group_dn("small", slapd.suffix), "member", [person_dn(i, slapd.suffix) for i in range(1, 10)])

    users_sync = run(api, "users")
    # 4 modified + 3 deactivated updated, 2 inserted, nothing else touched.
    assert (2, 7, 0) == counts(users_sync), users_sync
    users = {u["user_name"]: u for u in sandbox.rows("sys_user")}
    assert 32 == len(users)
    assert {f"user{i:05d}" for i in (28, 29, 30)} == {n for n, u in users.items() if u["active"] == "false"}
    assert all(users[f"user{i:05d}"]["email"] == f"new-{i}@example.com" for i in range(1, 5))
    assert "Person201" == users["user00201"]["last_name"]

    groups_sync = run(api, "groups")
    assert (0, 0) == counts(groups_sync)[:2] and groups_sync["ignored"] == 1, groups_sync  # only "small" changed
    members = {by_id.get(m["user"]) for m in sandbox.rows("sys_user_grmember", f"group={small}")}
    assert {f"user{i:05d}" for i in range(1, 10)} == members

    # Nothing changed since: nothing to send.
    assert (0, 0, 0) == counts(run(api, "users"))


def test_a_schedule_does_not_run_again_while_its_delivery_is_going(
    relay: tuple[Api, SandboxServer], slapd: Slapd
) -> None:
    api, sandbox = relay
    schedule(api, "users", f"ou=people,{slapd.suffix}", "(objectClass=inetOrgPerson)", "ldap_users")
    sandbox.faults(latency_ms=300)  # each request to the instance takes 0.3 s: delivery lasts a while
    status, job = api.request("POST", "/api/v1/schedules/users/run")
    assert 201 == status, job
    assert "succeeded" == api.wait_done(job["id"], timeout=scaled(60))["state"]
    assert api.job(job["id"])["sync"]["state"] in ("pending", "delivering")
    status, body = api.request("POST", "/api/v1/schedules/users/run")
    assert (409, "schedule_busy") == (status, body["error"]["code"]), body
    sandbox.faults(latency_ms=0)

    def delivered() -> bool:
        return bool(api.job(job["id"])["sync"]["state"] == "done")

    wait_until(delivered, scaled(60), "the first run's delivery")
    assert (0, 0, 30) == counts(run(api, "users"))[:2] + (len(sandbox.rows("sys_user")),)
