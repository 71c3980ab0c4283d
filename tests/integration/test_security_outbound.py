"""Outbound only: a running agent opens no listening port, and every socket it holds is one it
dialled to its control plane. Checked from the operating system's own table of the agent
process's sockets (psutil reads /proc), not from anything the agent says about itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psutil
from bridgehead_testing.harness import Agent, ControlPlane, wait_connected


def inet_sockets(pid: int) -> list[Any]:
    """The TCP and UDP sockets of the process ``pid`` and of every process it started."""
    root = psutil.Process(pid)
    sockets: list[Any] = []
    for process in [root, *root.children(recursive=True)]:
        sockets += process.net_connections(kind="inet")
    return sockets


def test_a_working_agent_listens_on_no_port(control: ControlPlane, agent_factory: Callable[..., Agent]) -> None:
    """While connected and after running a job, the agent's processes have no listening TCP
    socket and no bound UDP socket, and each TCP socket they have goes to the control plane."""
    agent = agent_factory(control, "outbound")
    wait_connected(control.api(), ["outbound"])
    api = control.api()
    job = api.submit("echo", {"count": 2})
    # The premise: the agent is fully up (connected, its plugins loaded, a job run and delivered).
    assert "succeeded" == api.wait_done(job["id"])["state"]
    assert agent.proc is not None

    sockets = inet_sockets(agent.proc.pid)

    assert [] == [s for s in sockets if s.status == psutil.CONN_LISTEN], sockets
    assert [] == [s for s in sockets if s.status == psutil.CONN_NONE], sockets  # UDP: bound, so reachable
    dialled = [s for s in sockets if s.status == psutil.CONN_ESTABLISHED]
    assert dialled, sockets  # the premise: its session's socket is seen at all
    assert {("127.0.0.1", control.port)} == {(s.raddr.ip, s.raddr.port) for s in dialled}, sockets
