"""The agent behind an HTTP CONNECT proxy: a real tinyproxy (tests/tinyproxy.py), control plane and agents.

Each test first shows that the proxy really carried (or, for NO_PROXY, really did not carry) the
agent's traffic: the CONNECT requests in tinyproxy's log, and the agent dropping when the proxy
stops. Without tinyproxy installed these tests fail; they never skip.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.harness import Agent, Api, ControlPlane, wait_connected, wait_until
from bridgehead_testing.tinyproxy import Tinyproxy

AgentFactory = Callable[..., Agent]
ProxyFactory = Callable[..., Tinyproxy]

PROXY_USER = "bhproxy"
PROXY_PASSWORD = "Proxy-test-pw-42"  # noqa: S105 - a throw-away proxy account for tests
WRONG_PASSWORD = "Not-the-proxy-pw-99"  # noqa: S105
# How the agent logs tinyproxy 1.11's answer to wrong credentials (401, not 407: see tests/tinyproxy.py).
REFUSED = (
    "the proxy refused the tunnel with HTTP 401 Unauthorized: check the proxy user and password"
    " (control.proxy_credential)"
)
# Where the agent's [credentials.corp_proxy] reads the password from, unless a test says otherwise.
FROM_ENV = 'password_env = "BH_PROXY_PASSWORD"'


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the proxy variables a test sets reach the agents it starts (Agent copies os.environ)."""
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)


@pytest.fixture
def proxy_factory(tmp_path: Path, control: ControlPlane) -> Iterator[ProxyFactory]:
    """Starts tinyproxy instances that may tunnel to ``control`` only, and always stops them."""
    started: list[Tinyproxy] = []

    def make(**kwargs: Any) -> Tinyproxy:
        proxy = Tinyproxy(tmp_path / f"proxy{len(started)}", connect_ports=[control.port], **kwargs)
        started.append(proxy)
        return proxy.start()

    yield make
    for proxy in started:
        proxy.stop()


def control_proxy(proxy: Tinyproxy, source: str = FROM_ENV) -> str:
    """Agent TOML for the [control] table: ``proxy`` with a credential, and that credential."""
    return (
        f'proxy = "{proxy.url}"\nproxy_credential = "corp_proxy"\n\n'
        f'[credentials.corp_proxy]\nusername = "{PROXY_USER}"\n{source}\n'
    )


def is_connected(api: Api, name: str) -> bool:
    """Whether the control plane lists agent ``name`` as connected now."""
    status, agents = api.request("GET", "/api/v1/agents")
    assert 200 == status, agents
    return any(a["name"] == name and a["connected"] for a in agents)


def echo_records(api: Api) -> list[dict[str, Any]]:
    """Run an echo job of three records on whichever agent is connected; its records."""
    job = api.submit("echo", {"count": 3})
    assert "succeeded" == api.wait_done(job["id"])["state"]
    return api.records(job["id"])


def proxy_counts(proxy: Tinyproxy, expected: int) -> tuple[list[str], int]:
    """The proxy's CONNECT targets and tunnels, once its log shows ``expected`` tunnels (it
    writes the lines as it handles them, which may trail the client's answer a little)."""
    wait_until(lambda: proxy.tunnels() >= expected, 10, f"{expected} tunnels in the proxy's log")
    return proxy.connect_requests(), proxy.tunnels()


def failures_since(agent: Agent, offset: int, control: ControlPlane, via: str = "") -> list[str]:
    """The agent's "connection to ... failed" log lines after byte ``offset`` of its log (those
    that name the proxy ``via``, as HOST:PORT, if given)."""
    url = re.escape(f"connection to wss://127.0.0.1:{control.port}/api/v1/agent/connect")
    proxy = f" via proxy {re.escape(via)}" if via else r"(?: via proxy \S+)?"
    marker = re.compile(f"{url}{proxy} failed: (.*)")
    return [m.group(1) for m in map(marker.search, agent.log_text()[offset:].splitlines()) if m]


def test_agent_enrols_and_runs_jobs_only_through_the_configured_proxy(
    control: ControlPlane, agent_factory: AgentFactory, proxy_factory: ProxyFactory
) -> None:
    """With [control] proxy and a credential, enrolment and websocket go through tinyproxy, and only through it."""
    proxy = proxy_factory(basic_auth=(PROXY_USER, PROXY_PASSWORD))
    target = f"127.0.0.1:{control.port}"
    agent = agent_factory(control, start=False, extra=control_proxy(proxy), env={"BH_PROXY_PASSWORD": PROXY_PASSWORD})
    # Enrolment: GET /api/v1/ca, then POST /api/v1/enroll, each through a tunnel of its own.
    assert ([target] * 2, 2) == proxy_counts(proxy, 2)

    agent.start()
    api = control.api()
    wait_connected(api, ["agent-1"])
    assert ([target] * 3, 3) == proxy_counts(proxy, 3)
    assert [{"n": 0}, {"n": 1}, {"n": 2}] == echo_records(api)

    # The tunnel is the agent's only way in: without the proxy it drops and cannot come back.
    offset = len(agent.log_text())
    port = proxy.port
    proxy.stop()
    wait_until(lambda: not is_connected(api, "agent-1"), 10, "the agent to drop with the proxy stopped")
    refused = "ConnectionRefusedError: [Errno 111] Connection refused"
    wait_until(lambda: failures_since(agent, offset, control).count(refused) >= 3, 15, "three refused reconnections")
    # After the session's end, refused while the control plane listens: what refuses is the
    # stopped proxy, which the log names. (An attempt that met tinyproxy while it was still
    # shutting down reads "did not receive a valid HTTP response from proxy".)
    reconnections = failures_since(agent, offset, control, via=f"127.0.0.1:{port}")[1:]
    stopping = "InvalidProxyMessage: did not receive a valid HTTP response from proxy"
    assert set(reconnections) <= {refused, stopping}, reconnections
    assert reconnections.count(refused) >= 3, reconnections
    assert 200 == api.request("GET", "/healthz")[0]
    assert not is_connected(api, "agent-1")

    proxy.start()
    assert port == proxy.port
    wait_connected(api, ["agent-1"])
    assert ([target] * 4, 4) == proxy_counts(proxy, 4)
    assert [{"n": 0}, {"n": 1}, {"n": 2}] == echo_records(api)


def test_wrong_proxy_password_keeps_the_agent_out_and_its_log_says_why(
    control: ControlPlane, agent_factory: AgentFactory, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    """A wrong proxy password keeps enrolment and agent out with the proxy's status logged; the right one lets it in."""
    proxy = proxy_factory(basic_auth=(PROXY_USER, PROXY_PASSWORD))
    password_file = tmp_path / "proxy.password"
    extra = control_proxy(proxy, f'password_file = "{password_file}"')
    token = control.enrollment_token()

    password_file.write_text(WRONG_PASSWORD + "\n")
    refused = Agent(tmp_path / "refused", "agent-1", [control.url], extra=extra).try_enroll(token)
    assert [f"127.0.0.1:{control.port}"] == proxy.connect_requests()  # it asked the proxy...
    # ...which refused: tinyproxy 1.11 answers wrong credentials with 401 (407 is for none at all).
    assert 0 != refused.returncode
    assert "Tunnel connection failed: 401 Unauthorized" in refused.stderr, refused.stderr
    assert 0 == proxy.tunnels()

    # The refused enrolment never reached the control plane: its one-time token still works.
    password_file.write_text(PROXY_PASSWORD + "\n")
    agent = agent_factory(control, start=False, extra=extra)  # enrols with a token of its own
    assert 0 == Agent(tmp_path / "token-reuse", "agent-2", [control.url], extra=extra).try_enroll(token).returncode

    password_file.write_text(WRONG_PASSWORD + "\n")
    requests_before = len(proxy.connect_requests())
    agent.start()
    wait_until(lambda: len(failures_since(agent, 0, control)) >= 2, 15, "two refused connections")
    refusals = failures_since(agent, 0, control)
    assert len(proxy.connect_requests()) > requests_before  # the agent did reach the proxy
    assert {REFUSED} == set(refusals)
    assert WRONG_PASSWORD not in agent.log_text()
    api = control.api()
    assert not is_connected(api, "agent-1")

    # The credential is read at each connection: fixing the file lets the running agent in.
    password_file.write_text(PROXY_PASSWORD + "\n")
    wait_connected(api, ["agent-1"])
    assert [{"n": 0}, {"n": 1}, {"n": 2}] == echo_records(api)


def test_https_proxy_variable_carries_the_agent_without_control_proxy(
    control: ControlPlane, agent_factory: AgentFactory, proxy_factory: ProxyFactory
) -> None:
    """Without [control] proxy, HTTPS_PROXY carries both enrolment and websocket."""
    proxy = proxy_factory()
    agent_factory(control, env={"HTTPS_PROXY": proxy.url})
    api = control.api()
    wait_connected(api, ["agent-1"])
    assert ([f"127.0.0.1:{control.port}"] * 3, 3) == proxy_counts(proxy, 3)
    assert [{"n": 0}, {"n": 1}, {"n": 2}] == echo_records(api)

    proxy.stop()  # the websocket was the tunnel: it goes with the proxy
    wait_until(lambda: not is_connected(api, "agent-1"), 10, "the agent to drop with the proxy stopped")


def test_no_proxy_sends_the_agent_direct_despite_https_proxy(
    control: ControlPlane, agent_factory: AgentFactory, proxy_factory: ProxyFactory
) -> None:
    """With NO_PROXY=127.0.0.1 beside HTTPS_PROXY the agent goes direct: no CONNECT, and it outlives the proxy."""
    proxy = proxy_factory()
    agent_factory(control, name="via-proxy", env={"HTTPS_PROXY": proxy.url})
    api = control.api()
    wait_connected(api, ["via-proxy"])
    # The premise: this HTTPS_PROXY works and carries an agent that is not exempted.
    assert [f"127.0.0.1:{control.port}"] * 3 == proxy.connect_requests()

    agent_factory(control, name="direct", env={"HTTPS_PROXY": proxy.url, "NO_PROXY": "127.0.0.1"})
    wait_connected(api, ["via-proxy", "direct"])
    assert [f"127.0.0.1:{control.port}"] * 3 == proxy.connect_requests()

    proxy.stop()
    wait_until(lambda: not is_connected(api, "via-proxy"), 10, "the proxied agent to drop with the proxy stopped")
    assert is_connected(api, "direct")
    assert [{"n": 0}, {"n": 1}, {"n": 2}] == echo_records(api)  # only "direct" can run it
