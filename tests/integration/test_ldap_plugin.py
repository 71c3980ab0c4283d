"""The ldap plugin through real control-plane and agent processes, against a real slapd."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import psutil
from bridgehead_testing.harness import Agent, Api, ControlPlane, scaled, wait_connected, wait_until
from bridgehead_testing.ldap_data import SESSION_PEOPLE, person_dn
from bridgehead_testing.slapd import Slapd

AgentFactory = Callable[..., Agent]


def profiles(server: Slapd) -> str:
    return (
        f'[connections.dir]\nplugin = "ldap"\nurl = "{server.url}"\ncredential = "reader"\npage_size = 250\n\n'
        f'[credentials.reader]\nusername = "{server.reader_dn}"\npassword = "{server.reader_password}"\n'
    )


def start_agent(control: ControlPlane, agent_factory: AgentFactory, server: Slapd) -> tuple[Agent, Api]:
    agent = agent_factory(control, extra=profiles(server))
    api = control.api()
    wait_connected(api, [agent.name])
    return agent, api


def connections_between(agent: Agent, server: Slapd) -> list[int]:
    """Local ports of the agent's open TCP connections to the server's plain port."""
    assert agent.proc is not None
    port = int(server.url.rsplit(":", 1)[1])
    connections = psutil.Process(agent.proc.pid).net_connections("tcp")
    return sorted(c.laddr.port for c in connections if c.raddr and c.raddr.port == port)


def test_ten_thousand_entries_arrive_exactly_once(
    control: ControlPlane, agent_factory: AgentFactory, slapd_server: Slapd
) -> None:
    _agent, api = start_agent(control, agent_factory, slapd_server)
    job = api.submit("ldap", {"connection": "dir", "base": f"ou=people,{slapd_server.suffix}", "filter": "(uid=*)"})
    done = api.wait_done(job["id"], timeout=120)
    assert ("succeeded", SESSION_PEOPLE) == (done["state"], done["record_count"]), done
    records = api.records(job["id"])
    dns = [r["dn"] for r in records]
    assert SESSION_PEOPLE == len(dns) == len(set(dns))
    assert {person_dn(i) for i in range(1, SESSION_PEOPLE + 1)} == set(dns)
    assert all(isinstance(r["employeeNumber"], str) and isinstance(r["mail"], list) for r in records)


def frozen_search(
    control: ControlPlane, agent_factory: AgentFactory, server: Slapd, **job: object
) -> tuple[Agent, Api, str, int]:
    """A job whose server stops answering (SIGSTOP) once the agent has connected to it."""
    agent, api = start_agent(control, agent_factory, server)
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)  # the kernel still completes the TCP handshake
    submitted = api.submit("ldap", {"connection": "dir", "base": server.suffix}, max_attempts=1, **job)
    wait_until(lambda: connections_between(agent, server), 20, "the agent to connect to slapd", interval=0.1)
    return agent, api, submitted["id"], server.pid


def test_cancel_closes_the_connection_so_the_server_abandons_the_search(
    control: ControlPlane, agent_factory: AgentFactory, slapd: Slapd
) -> None:
    agent, api, job_id, pid = frozen_search(control, agent_factory, slapd)
    try:
        status, body = api.request("POST", f"/api/v1/jobs/{job_id}/cancel")
        assert 200 == status, body
        started = time.monotonic()
        done = api.wait_done(job_id, timeout=20)
        assert ("cancelled", "cancelled") == (done["state"], done["error"]["code"]), done
        wait_until(lambda: not connections_between(agent, slapd), 10, "the agent's LDAP connection to close")
        assert time.monotonic() - started < scaled(10)
    finally:
        os.kill(pid, signal.SIGCONT)
    # The server is fine afterwards, and the agent's next search runs.
    job = api.submit("ldap", {"connection": "dir", "base": slapd.suffix, "filter": "(uid=*)"})
    assert ("succeeded", 30) == (lambda d: (d["state"], d["record_count"]))(api.wait_done(job["id"]))


def test_job_timeout_closes_the_connection(control: ControlPlane, agent_factory: AgentFactory, slapd: Slapd) -> None:
    agent, api, job_id, pid = frozen_search(control, agent_factory, slapd, timeout_s=2)
    try:
        started = time.monotonic()
        done = api.wait_done(job_id, timeout=20)
        assert ("failed", "timeout") == (done["state"], done["error"]["code"]), done
        wait_until(lambda: not connections_between(agent, slapd), 10, "the agent's LDAP connection to close")
        assert time.monotonic() - started < scaled(10)
    finally:
        os.kill(pid, signal.SIGCONT)


# --- sync ----------------------------------------------------------------------------------


def sync_run(api: Api, server: Slapd, name: str = "people") -> list[dict[str, object]]:
    job = api.submit(
        "ldap",
        {
            "connection": "dir",
            "base": f"ou=people,{server.suffix}",
            "filter": "(objectClass=inetOrgPerson)",
            "attributes": ["uid", "mail", "description"],
            "mode": "sync",
            "sync": name,
        },
    )
    done = api.wait_done(job["id"], timeout=60)
    assert "succeeded" == done["state"], done
    return api.records(job["id"])


def test_sync_returns_exactly_what_changed_since_the_previous_run(
    control: ControlPlane, agent_factory: AgentFactory, slapd: Slapd
) -> None:
    """First run: every entry. Then 10 modified, 5 added, 3 deleted: the next run returns
    exactly those 18 changes, and the one after that nothing."""
    _agent, api = start_agent(control, agent_factory, slapd)
    first = sync_run(api, slapd)
    assert 30 == len(first) and {"upsert"} == {r["op"] for r in first}
    ids = {r["dn"]: r["id"] for r in first}
    assert 30 == len(set(ids.values()))

    modified = [person_dn(i) for i in range(1, 11)]
    for dn in modified:
        slapd.replace(dn, "mail", [f"changed-{dn.split(',')[0][4:]}@example.com"])
    added = [person_dn(i) for i in range(101, 106)]
    for i, dn in enumerate(added, 101):
        slapd.add(dn, {"objectClass": ["inetOrgPerson"], "uid": f"user{i:05d}", "cn": "New", "sn": "Person"})
    deleted = [person_dn(i) for i in range(21, 24)]
    for dn in deleted:
        slapd.delete(dn)

    second = sync_run(api, slapd)
    upserts = {r["dn"]: r for r in second if r["op"] == "upsert"}
    deletes = [r for r in second if r["op"] == "delete"]
    assert 18 == len(second), second
    assert set(modified) | set(added) == set(upserts)
    assert all(upserts[dn]["mail"][0].startswith("changed-") for dn in modified)  # type: ignore[index]
    assert {ids[dn] for dn in deleted} == {r["id"] for r in deletes}
    assert all(r["dn"] is None for r in deletes)

    assert [] == sync_run(api, slapd)
    status, syncs = api.request("GET", "/api/v1/syncs")
    assert 200 == status
    (people,) = [s for s in syncs if s["name"] == "people"]
    assert (3, 32) == (people["version"], people["identities"]), people


def test_sync_state_follows_the_cluster_and_can_be_reset(
    control: ControlPlane, agent_factory: AgentFactory, slapd: Slapd
) -> None:
    """The state lives on the control plane: a second agent continues where the first
    stopped; after DELETE /api/v1/syncs/NAME the next run returns every entry again."""
    first_agent, api = start_agent(control, agent_factory, slapd)
    assert 30 == len(sync_run(api, slapd, "moves"))
    first_agent.stop()
    agent_factory(control, name="agent-2", extra=profiles(slapd))
    wait_connected(api, ["agent-2"])
    slapd.replace(person_dn(5), "mail", ["moved@example.com"])
    (change,) = sync_run(api, slapd, "moves")
    assert (person_dn(5), ["moved@example.com"]) == (change["dn"], change["mail"])
    status, body = api.request("DELETE", "/api/v1/syncs/moves")
    assert 200 == status, body
    assert 30 == len(sync_run(api, slapd, "moves"))
    status, body = api.request("DELETE", "/api/v1/syncs/nosuch")
    assert (404, "sync_not_found") == (status, body["error"]["code"]), body


WRONG_PASSWORD = "Wr0ng-ldap-pw-5e2b"  # noqa: S105 - looked for in messages and logs


def test_wrong_password_fails_the_job_and_is_never_shown(
    control: ControlPlane, agent_factory: AgentFactory, slapd_server: Slapd
) -> None:
    extra = profiles(slapd_server) + (
        f'\n[connections.dir_badpw]\nplugin = "ldap"\nurl = "{slapd_server.url}"\ncredential = "badpw"\n\n'
        f'[credentials.badpw]\nusername = "{slapd_server.reader_dn}"\npassword_env = "BH_TEST_LDAP_PW"\n'
    )
    agent = agent_factory(control, extra=extra, env={"BH_TEST_LDAP_PW": WRONG_PASSWORD})
    api = control.api()
    wait_connected(api, [agent.name])
    job = api.submit("ldap", {"connection": "dir_badpw", "base": slapd_server.suffix})
    done = api.wait_done(job["id"])
    assert ("failed", "auth_failed") == (done["state"], done["error"]["code"]), done
    assert "invalidCredentials" in done["error"]["message"]
    assert WRONG_PASSWORD not in str(done)
    assert WRONG_PASSWORD not in str(api.request("GET", "/api/v1/jobs")[1])
    assert WRONG_PASSWORD not in agent.log_text() and WRONG_PASSWORD not in control.log_text()
