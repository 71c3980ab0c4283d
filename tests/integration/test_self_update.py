"""Self-update end to end: a real control plane hands a signed release to real agents over
their sessions; each agent verifies it, drains, swaps and restarts into it on probation, and
rolls back by itself when the release cannot connect.

The releases here are small executable scripts standing in for builds of the binary: the
mechanics under test (fetch, verify, drain, swap, exec, trial, rollback) treat a release as an
opaque signed executable, and a script can claim a version (``BRIDGEHEAD_VERSION_OVERRIDE``)
and break its own networking on purpose, which a second PyInstaller build per test could not
do in the CI budget. The swap's crash safety step by step is test_update_crash_points.py's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from bridgehead_testing.harness import Agent, Api, ControlPlane, scaled, wait_connected, wait_until
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bridgehead.agent.update.signing import sign_release

HEALTH_DEADLINE_S = 8


@pytest.fixture
def release_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def releases_config(key: Ed25519PrivateKey) -> str:
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    return (
        f'\n[releases]\npublic_key = "{public}"\nhealth_deadline_s = {HEALTH_DEADLINE_S}\n'
        "poll_s = 0.5\nupdate_timeout_s = 120\nchunk_bytes = 65536\n"
    )


def script_release(path: Path, version: str, broken: bool = False, pad: int = 0) -> bytes:
    """An executable standing in for a build of the agent at ``version``: it runs this
    checkout's agent claiming that version, notes that it ran, and (``broken``) dials a
    closed port instead of the control plane, as a release with a broken network stack would.
    ``pad``: bytes of comment, to make a download span many chunks."""
    marker = path.with_name(path.name + ".ran")
    python = shlex.quote(sys.executable)
    if broken:
        code = (
            "import sys, bridgehead.agent.dialing as d; d.websocket_url = lambda url: 'ws://127.0.0.1:9/'; "
            "from bridgehead.agent.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        run = f'exec {python} -c "{code}" "$@"'
    else:
        run = f'exec {python} -m bridgehead.agent.cli "$@"'
    text = (
        "#!/bin/sh\n"
        f"# a stand-in release of bridgehead-agent {version}\n"
        + ("# " + "x" * 78 + "\n")
        * (pad // 80)
        + f"echo ran >> {shlex.quote(str(marker))}\n"
        f"export BRIDGEHEAD_VERSION_OVERRIDE={version}\n"
        f"{run}\n"
    )
    path.write_text(text)
    path.chmod(0o755)
    return path.read_bytes()


def upload(api: Api, key: Ed25519PrivateKey, version: str, data: bytes) -> None:
    signature = base64.b64encode(sign_release(key, version, hashlib.sha256(data).hexdigest())).decode()
    query = urlencode({"version": version, "signature": signature})
    status, body = api.request("POST", f"/api/v1/releases?{query}", data)
    assert 201 == status, body


def want(api: Api, cluster: str, version: str) -> None:
    status, body = api.request("PUT", f"/api/v1/clusters/{cluster}/release", {"version": version})
    assert 200 == status, body


def agent_versions(api: Api) -> dict[str, tuple[bool, str]]:
    status, agents = api.request("GET", "/api/v1/agents")
    assert 200 == status, agents
    return {a["name"]: (a["connected"], a.get("version", "")) for a in agents}


def wait_version(api: Api, name: str, version: str, timeout: float = 60) -> None:
    wait_until(
        lambda: agent_versions(api).get(name) == (True, version),
        scaled(timeout),
        f"agent {name} connected on release {version}",
        interval=0.2,
    )


def updates(control: ControlPlane, agent: str) -> list[dict[str, Any]]:
    """The agent's update reports as the store keeps them, oldest first (the CLI's listing)."""
    from bridgehead_testing.harness import run_cli

    out = run_cli("bridgehead.control.cli", "release", "list", "--data-dir", str(control.data_dir), "--json").stdout
    rows: list[dict[str, Any]] = json.loads(out)["updates"]
    return sorted((r for r in rows if r["agent"] == agent), key=lambda r: r["at"])


def states(control: ControlPlane, agent: str, version: str) -> list[str]:
    return [r["state"] for r in updates(control, agent) if r["version"] == version]


@dataclass
class Fleet:
    """A control plane with a release key, and what a test does with it."""

    control: ControlPlane
    api: Api
    key: Ed25519PrivateKey
    releases: Path
    make_agent: Callable[..., Agent]

    def agent(self, name: str = "agent-1", **options: Any) -> Agent:
        agent = self.make_agent(self.control, name, **options)
        wait_connected(self.api, [name])
        return agent

    def publish(self, version: str, **script: Any) -> bytes:
        """A stand-in release, signed and uploaded; the cluster does not want it yet."""
        data = script_release(self.releases / f"release-{version}", version, **script)
        upload(self.api, self.key, version, data)
        return data

    def ran(self, version: str) -> bool:
        return (self.releases / f"release-{version}.ran").exists()


@pytest.fixture
def fleet(
    control_factory: Callable[..., ControlPlane],
    agent_factory: Callable[..., Agent],
    release_key: Ed25519PrivateKey,
    tmp_path: Path,
) -> Fleet:
    control = control_factory(heartbeat_s=1.0, extra_config=releases_config(release_key))
    return Fleet(control, control.api(), release_key, tmp_path, agent_factory)


def test_a_good_release_is_taken_with_jobs_drained_and_none_lost(fleet: Fleet) -> None:
    control, api = fleet.control, fleet.api
    agent = fleet.agent()
    assert (agent.dir / "data" / "release-key").read_bytes(), "no release key pinned at enrolment"
    pid = agent.proc.pid if agent.proc else 0
    # Jobs running when the update arrives: the drain lets them finish on this agent.
    jobs = [api.submit("echo", {"sleep_s": 3, "records": [{"n": i}]})["id"] for i in range(3)]
    wait_until(lambda: all(api.job(j)["state"] == "running" for j in jobs), scaled(20), "jobs running", interval=0.1)
    fleet.publish("0.2.0")
    want(api, "default", "0.2.0")
    wait_version(api, agent.name, "0.2.0")
    wait_until(lambda: "committed" in states(control, agent.name, "0.2.0"), scaled(30), "the commit reported")
    assert fleet.ran("0.2.0")
    for job_id in jobs:
        job = api.wait_done(job_id, timeout=30)
        assert ("succeeded", 1) == (job["state"], job["attempt"]), job
        assert 1 == len(api.records(job_id)), job_id
    # exec kept the process: a service manager would have seen no restart.
    assert agent.proc is not None and agent.proc.poll() is None and agent.proc.pid == pid
    # The new release runs jobs.
    after = api.submit("echo", {"records": [{"ok": True}]})
    assert "succeeded" == api.wait_done(after["id"], timeout=30)["state"]
    assert ["offered", "downloading", "restarting", "committed"] == states(control, agent.name, "0.2.0")


def test_a_release_that_cannot_connect_rolls_back_by_itself_and_is_not_retried(fleet: Fleet) -> None:
    control, api = fleet.control, fleet.api
    agent = fleet.agent()
    fleet.publish("0.3.0", broken=True)
    want(api, "default", "0.3.0")
    wait_until(lambda: fleet.ran("0.3.0"), scaled(60), "the broken release started", interval=0.2)
    # It cannot reach the control plane; at the deadline it rolls back to the base by itself.
    wait_until(
        lambda: "rolled_back" in states(control, agent.name, "0.3.0"),
        scaled(HEALTH_DEADLINE_S + 60),
        "the rollback reported",
        interval=0.5,
    )
    wait_version(api, agent.name, "0.1.0")
    [report] = [r for r in updates(control, agent.name) if r["state"] == "rolled_back"]
    assert "healthy" in report["message"], report
    # Not offered again in a loop: several polls later, still the one offer.
    time.sleep(scaled(3))  # the behaviour under test is that nothing happens in that time
    assert 1 == states(control, agent.name, "0.3.0").count("offered")
    job = api.submit("echo", {"records": [{"ok": True}]})
    assert "succeeded" == api.wait_done(job["id"], timeout=30)["state"]


def test_a_release_tampered_on_the_control_plane_is_refused(fleet: Fleet) -> None:
    """Whoever holds the control plane's disk can swap the bytes, not sign them."""
    control, api = fleet.control, fleet.api
    agent = fleet.agent()
    data = fleet.publish("0.2.0")
    [stored] = list((control.data_dir / "releases").glob("0.2.0*"))
    stored.write_bytes(data.replace(b"exec ", b"rm -rf / ; exec ", 1)[: len(data)])
    want(api, "default", "0.2.0")
    wait_until(lambda: "refused" in states(control, agent.name, "0.2.0"), scaled(30), "the refusal")
    [report] = [r for r in updates(control, agent.name) if r["state"] == "refused"]
    assert "hash to" in report["message"] and hashlib.sha256(data).hexdigest() in report["message"], report
    assert not fleet.ran("0.2.0")
    assert agent_versions(api)[agent.name] == (True, "0.1.0")
    releases = agent.dir / "data" / "releases"
    assert not (releases / "0.2.0").exists() and not (releases / "current").exists()


def test_agents_of_a_cluster_update_one_at_a_time(fleet: Fleet) -> None:
    control, api = fleet.control, fleet.api
    first, second = fleet.agent("agent-a"), fleet.agent("agent-b")
    fleet.publish("0.2.0")
    want(api, "default", "0.2.0")
    wait_version(api, first.name, "0.2.0", timeout=90)
    wait_version(api, second.name, "0.2.0", timeout=90)
    a, b = updates(control, first.name), updates(control, second.name)
    windows = sorted([(a[0]["at"], a[-1]["at"]), (b[0]["at"], b[-1]["at"])])
    assert windows[0][1] <= windows[1][0], f"the two updates overlapped: {a} {b}"
    assert "committed" == a[-1]["state"] == b[-1]["state"]


@pytest.mark.parametrize("crash_at", ["update.after_state_trial", "update.after_link_swap"])
def test_killed_in_the_swap_the_agent_starts_and_finishes_the_update(fleet: Fleet, crash_at: str) -> None:
    """kill -9 at a step of the swap (the process kills itself there), then a restart as a
    service manager would do: the agent starts and ends on the new release, committed."""
    control, api = fleet.control, fleet.api
    agent = fleet.agent(env={"BRIDGEHEAD_CRASH_AT": crash_at})
    fleet.publish("0.2.0")
    want(api, "default", "0.2.0")
    assert agent.proc is not None
    agent.proc.wait(timeout=scaled(60))
    assert f"crash point {crash_at}" in agent.log_text()
    agent.env = {k: v for k, v in agent.env.items() if k != "BRIDGEHEAD_CRASH_AT"}
    agent.start()
    wait_version(api, agent.name, "0.2.0")
    wait_until(lambda: "committed" in states(control, agent.name, "0.2.0"), scaled(30), "the commit reported")


def test_a_download_cut_by_a_kill_resumes_from_the_disk(fleet: Fleet) -> None:
    api = fleet.api
    agent = fleet.agent()
    data = fleet.publish("0.2.0", pad=6 * 1024 * 1024)
    want(api, "default", "0.2.0")
    partial = agent.dir / "data" / "releases" / ".partial" / "0.2.0"

    def some_on_disk() -> bool:
        return partial.exists() and 0 < partial.stat().st_size < len(data)

    wait_until(some_on_disk, scaled(60), "part of the release on the agent's disk", interval=0.01)
    agent.kill9()
    agent.start()
    wait_version(api, agent.name, "0.2.0", timeout=120)
    resumed = [line for line in agent.log_text().splitlines() if "downloading" in line and "from byte" in line]
    assert any(int(line.rsplit("from byte ", 1)[1].split(")")[0]) > 0 for line in resumed[1:]), resumed
    assert os.path.getsize(agent.dir / "data" / "releases" / "0.2.0" / "bridgehead-agent") == len(data)


def test_an_older_release_is_refused_unless_the_agent_allows_downgrades(fleet: Fleet) -> None:
    """A control plane that was taken over could hand back an old, signed release with a known
    hole: the agent refuses it unless its own config allows downgrades."""
    control, api = fleet.control, fleet.api
    agent = fleet.agent()
    fleet.publish("0.0.9")
    want(api, "default", "0.0.9")
    wait_until(lambda: "refused" in states(control, agent.name, "0.0.9"), scaled(30), "the refusal")
    [report] = [r for r in updates(control, agent.name) if r["state"] == "refused"]
    assert "older than the running 0.1.0" in report["message"], report
    assert not fleet.ran("0.0.9") and agent_versions(api)[agent.name] == (True, "0.1.0")


def test_an_agent_enrolled_without_a_release_key_takes_no_release(
    control_factory: Callable[..., ControlPlane], agent_factory: Callable[..., Agent], tmp_path: Path
) -> None:
    """The release key is pinned at enrolment: a key configured later (or by someone who took
    the control plane over) cannot make an agent enrolled without one run a release."""
    control = control_factory(heartbeat_s=1.0)
    agent = agent_factory(control)
    wait_connected(control.api(), [agent.name])
    key = Ed25519PrivateKey.generate()
    control.stop()
    control.config.write_text(control.config.read_text() + releases_config(key))
    control.start()
    fleet = Fleet(control, control.api(), key, tmp_path, agent_factory)
    wait_connected(fleet.api, [agent.name])
    fleet.publish("0.2.0")
    want(fleet.api, "default", "0.2.0")
    wait_until(lambda: "refused" in states(control, agent.name, "0.2.0"), scaled(30), "the refusal")
    [report] = [r for r in updates(control, agent.name) if r["state"] == "refused"]
    assert "no release key was pinned at enrolment" in report["message"], report
    assert not fleet.ran("0.2.0")
