"""One identity for several control-plane nodes on one PostgreSQL database (issue 19): real
server processes, real agents, a real PostgreSQL. An agent enrolled through one node connects
to another without enrolling again; API tokens and revocations hold on every node; a node
with another CA, or the wrong identity secret, is refused at start with one clear line.
The rules themselves, in-process: tests/unit/test_shared_identity_rules.py."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from bridgehead_testing.harness import Agent, ControlPlane, free_port, scaled, wait_connected, wait_until
from bridgehead_testing.nodes import IDENTITY_SECRET_ENV, fresh_database
from cryptography import x509

from bridgehead.control.pki import fingerprint


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database of its own, dropped afterwards; its URL. The nodes' identity secret is in
    the environment they inherit."""
    monkeypatch.setenv(IDENTITY_SECRET_ENV, secrets.token_urlsafe(32))
    with fresh_database("bh_id") as url:
        yield url


def store_config(database: str, secret_env: str | None = IDENTITY_SECRET_ENV) -> str:
    secret = f'identity_secret_env = "{secret_env}"\n' if secret_env else ""
    return f'[store]\nbackend = "postgresql"\ndatabase = "{database}"\n{secret}'


def identity_rows(database: str) -> list[object]:
    """Everything the database holds of the identity, to compare before and after."""

    async def run() -> list[object]:
        conn = await asyncpg.connect(database)
        try:
            ca = await conn.fetch("SELECT * FROM control_identity")
            keys = await conn.fetch("SELECT * FROM control_signing_keys ORDER BY key_id")
            return [tuple(row.values()) for row in [*ca, *keys]]
        finally:
            await conn.close()

    return asyncio.run(run())


def two_nodes(database: str, control_factory: Callable[..., ControlPlane]) -> tuple[ControlPlane, ControlPlane]:
    first = control_factory(heartbeat_s=1.0, extra_config=store_config(database))
    second = control_factory(heartbeat_s=1.0, extra_config=store_config(database))
    return first, second


def enrolled_through(node: ControlPlane, then_only: ControlPlane, tmp_path: Path, name: str = "agent-1") -> Agent:
    """An agent enrolled through ``node`` whose list then holds ``then_only``'s URL alone."""
    agent = Agent(tmp_path / "agents", name, [node.url])
    agent.enroll(node.enrollment_token())
    agent.config.write_text(agent.config.read_text().replace(json.dumps([node.url]), json.dumps([then_only.url])))
    assert node.url not in agent.config.read_text()
    return agent


def serve_once(data_dir: Path, config: str) -> subprocess.CompletedProcess[str]:
    """``bridgehead-control serve`` on ``data_dir``, expected to refuse and exit."""
    config_file = data_dir.parent / f"refused-{secrets.token_hex(3)}.toml"
    config_file.write_text(config)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bridgehead.control.cli",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--config",
            str(config_file),
        ],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused start says why on (exit 2, no traceback)."""
    assert 2 == result.returncode, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("bridgehead-control: ")]
    assert 1 == len(lines), result.stderr
    return lines[0]


def test_an_agent_enrolled_through_one_node_runs_jobs_on_another(
    database: str, control_factory: Callable[..., ControlPlane], tmp_path: Path
) -> None:
    first, second = two_nodes(database, control_factory)
    agent = enrolled_through(first, second, tmp_path)
    started: list[Agent] = [agent.start()]
    try:
        wait_connected(second.api(), ["agent-1"])
        job = second.api().submit("echo", {"count": 3})
        done = second.api().wait_done(job["id"])
        assert ("succeeded", 3) == (done["state"], done["record_count"]), done
        assert 3 == len(second.api().records(job["id"]))
    finally:
        for each in started:
            each.stop(timeout=10)

    # What the agent checked: node 2's certificate (its own, with its own key) is issued by the
    # CA the agent pinned when it enrolled through node 1, and node 2 signs its offers with a
    # key the agent trusts since then.
    pinned = (agent.dir / "data" / "control-ca.pem").read_bytes()
    assert fingerprint(pinned) == fingerprint((first.data_dir / "tls" / "ca.pem").read_bytes())
    assert fingerprint(pinned) == fingerprint((second.data_dir / "tls" / "ca.pem").read_bytes())
    server_certs = [(node.data_dir / "tls" / "server.pem").read_bytes() for node in (first, second)]
    assert server_certs[0] != server_certs[1]
    x509.load_pem_x509_certificate(server_certs[1]).verify_directly_issued_by(x509.load_pem_x509_certificate(pinned))
    signing = (second.data_dir / "signing" / "current").read_text().strip()
    trusted = json.loads((agent.dir / "data" / "signing-keys.json").read_bytes())
    assert signing in [key["key_id"] for key in trusted]
    assert 2 == len(identity_rows(database))  # one CA, one signing key: both nodes published nothing else


def test_tokens_and_revocations_made_on_one_node_hold_on_another(
    database: str, control_factory: Callable[..., ControlPlane], tmp_path: Path
) -> None:
    first, second = two_nodes(database, control_factory)
    viewer = first.token("viewer")
    status, _ = second.api(viewer).request("GET", "/api/v1/agents")
    assert 200 == status

    agent = enrolled_through(first, second, tmp_path).start()
    try:
        wait_connected(second.api(), ["agent-1"])
        subprocess.run(
            [sys.executable, "-m", "bridgehead.control.cli", "agent", "revoke", "agent-1", "--data-dir"]
            + [str(first.data_dir)],
            check=True,
            capture_output=True,
            timeout=scaled(60),
        )

        def connected() -> bool:
            _, agents = second.api().request("GET", "/api/v1/agents")
            return any(a["name"] == "agent-1" and a["connected"] for a in agents)

        wait_until(lambda: not connected(), 10, "the revoked agent dropped by node 2")
        deadline = time.monotonic() + scaled(5)  # it keeps trying (backoff at most 2 s): refused
        while time.monotonic() < deadline:
            assert not connected()
            time.sleep(0.2)
    finally:
        agent.stop(timeout=10)


def test_a_node_with_another_ca_is_refused_and_the_database_is_untouched(
    database: str, control_factory: Callable[..., ControlPlane]
) -> None:
    first = control_factory(heartbeat_s=1.0, extra_config=store_config(database))
    ours = fingerprint((first.data_dir / "tls" / "ca.pem").read_bytes())
    other = control_factory(heartbeat_s=1.0)  # a control plane of its own, which served
    assert 0 == other.stop()
    theirs = fingerprint((other.data_dir / "tls" / "ca.pem").read_bytes())
    before = identity_rows(database)

    line = refusal(serve_once(other.data_dir, store_config(database)))
    assert f"this data dir's CA (sha256 {theirs})" in line, line
    assert f"(sha256 {ours}, published by node" in line, line
    assert "empty data dir" in line, line
    assert before == identity_rows(database)
    assert theirs == fingerprint((other.data_dir / "tls" / "ca.pem").read_bytes())


def test_a_node_with_the_wrong_secret_or_none_is_refused(
    database: str, control_factory: Callable[..., ControlPlane], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = control_factory(heartbeat_s=1.0, extra_config=store_config(database))
    ours = fingerprint((first.data_dir / "tls" / "ca.pem").read_bytes())
    before = identity_rows(database)
    monkeypatch.setenv("BH_TEST_WRONG_SECRET", secrets.token_urlsafe(32))

    line = refusal(serve_once(tmp_path / "wrong", store_config(database, "BH_TEST_WRONG_SECRET")))
    assert "identity_secret_env/identity_secret_file does not open" in line, line
    assert ours in line and "the secret the other nodes use" in line, line
    assert not (tmp_path / "wrong" / "tls" / "ca.key").exists()

    line = refusal(serve_once(tmp_path / "none", store_config(database, None)))
    assert "lacks the CA's private key" in line and "set [store] identity_secret_env" in line, line
    assert before == identity_rows(database)


def test_nodes_started_at_once_on_an_empty_database_share_one_identity(database: str, tmp_path: Path) -> None:
    for i in range(2):
        (tmp_path / f"n{i}").mkdir()
    nodes = [ControlPlane(tmp_path / f"n{i}", heartbeat_s=1.0, extra_config=store_config(database)) for i in range(2)]
    failures: list[BaseException] = []

    def start(node: ControlPlane) -> None:
        try:
            node.start()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(node,)) for node in nodes]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [] == failures
        cas = {fingerprint((node.data_dir / "tls" / "ca.pem").read_bytes()) for node in nodes}
        keys = {(node.data_dir / "signing" / "current").read_text() for node in nodes}
        assert (1, 1, 2) == (len(cas), len(keys), len(identity_rows(database)))
    finally:
        for node in nodes:
            node.stop()


def test_a_signing_key_rotated_on_one_node_reaches_the_others_through_the_database(
    database: str, control_factory: Callable[..., ControlPlane], tmp_path: Path
) -> None:
    first, second = two_nodes(database, control_factory)
    old = (second.data_dir / "signing" / "current").read_text()
    agent = enrolled_through(first, second, tmp_path).start()
    try:
        wait_connected(second.api(), ["agent-1"])
        rotated = subprocess.run(
            [sys.executable, "-m", "bridgehead.control.cli", "signing-key", "rotate", "--data-dir"]
            + [str(first.data_dir)],
            check=True,
            capture_output=True,
            text=True,
            timeout=scaled(60),
        )
        new = rotated.stdout.split()[0]
        assert new != old
        for node in (first, second):  # the rotated node publishes it, the other takes it
            assert 0 == node.stop()
            node.start()
        assert new == (second.data_dir / "signing" / "current").read_text()
        wait_connected(second.api(), ["agent-1"])
        job = second.api().submit("echo", {"count": 2})
        assert "succeeded" == second.api().wait_done(job["id"])["state"]
        trusted = json.loads((agent.dir / "data" / "signing-keys.json").read_bytes())
        assert {old, new} <= {key["key_id"] for key in trusted}  # learned from node 2's welcome
    finally:
        agent.stop(timeout=10)
