"""The ldap plugin through real control-plane and agent processes, against a real slapd."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import psutil
from harness import Agent, Api, ControlPlane, scaled, wait_connected, wait_until
from slapd import SESSION_PEOPLE, Slapd, person_dn

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
