"""Fixtures that start real control planes and agents, and always stop them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.harness import Agent, ControlPlane
from bridgehead_testing.ldap_data import session_entries, small_entries
from bridgehead_testing.slapd import Slapd
from bridgehead_testing.sshd import Sshd, TestUser, ensure_test_user


@pytest.fixture
def control_factory(tmp_path: Path) -> Iterator[Callable[..., ControlPlane]]:
    started: list[ControlPlane] = []

    def make(**kwargs: Any) -> ControlPlane:
        workdir = tmp_path / f"cp{len(started)}"
        workdir.mkdir()
        cp = ControlPlane(workdir, **kwargs)
        started.append(cp)  # before start: a start that fails half-way still gets stopped
        return cp.start()

    yield make
    for cp in started:
        cp.stop()


@pytest.fixture
def control(control_factory: Callable[..., ControlPlane]) -> ControlPlane:
    """A control plane with a 1 s heartbeat, so that loss is noticed within 2 s."""
    return control_factory(heartbeat_s=1.0)


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def make(
        control: ControlPlane, name: str = "agent-1", urls: list[str] | None = None, start: bool = True, **kwargs: Any
    ) -> Agent:
        agent = Agent(tmp_path / "agents", name, urls or [control.url], **kwargs)
        agent.enroll(control.enrollment_token(kwargs.get("cluster", "default")))
        if start:
            agent.start()
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.stop(timeout=10)


# --- a real OpenLDAP server (tests/slapd.py) -----------------------------------------------


@pytest.fixture(scope="session")
def slapd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """One slapd for the session: base entries, 10,000 people, ``cn=big`` (5,000 members), nested groups.

    Shared by every test that asks for it, so treat it as read-only; use ``slapd`` to write.
    """
    server = Slapd(tmp_path_factory.mktemp("slapd-session"))
    try:
        server.load(session_entries(server.suffix))
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A fresh small slapd per test (30 people, ``cn=small``, nested groups): free to write, stop, restart."""
    server = Slapd(tmp_path / "slapd")
    try:
        server.load(small_entries(server.suffix))
        server.start()
        yield server
    finally:
        server.stop()


# --- a real OpenSSH server (tests/sshd.py) ------------------------------------------------


@pytest.fixture(scope="session")
def test_user() -> TestUser:
    """The local account sshd logs tests in as (made once, idempotently, with a sudo rule)."""
    return ensure_test_user()


@pytest.fixture
def sshd(tmp_path: Path, test_user: TestUser) -> Iterator[Sshd]:
    """A fresh sshd per test: its own host key, config and port; the test user may log in."""
    server = Sshd(tmp_path / "sshd", users=[test_user.name])
    try:
        server.start()
        yield server
    finally:
        server.stop()
