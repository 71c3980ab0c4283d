"""ssh jobs end to end: submitted to a real control plane, run by a real agent process against
a real sshd, their records read back through the job API."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from bridgehead_testing.harness import Agent, Api, ControlPlane, wait_connected, wait_until
from bridgehead_testing.sshd import Sshd, TestUser, make_client_key

AgentFactory = Callable[..., Agent]


@pytest.fixture
def client_key(tmp_path: Path, sshd: Sshd, test_user: TestUser) -> Path:
    private, public = make_client_key(tmp_path / "id_ed25519")
    sshd.add_authorized_key(test_user.name, public)
    return private


def start_agent(
    control: ControlPlane, agent_factory: AgentFactory, sshd: Sshd, user: TestUser, key: Path, **profile: str
) -> Api:
    # Shell lines (pipes, ;, redirections) need allow_shell, which cannot go with an allow-list.
    shell = {} if "allowed_commands" in profile else {"allow_shell": "true"}
    keys = "".join(f"{name} = {value}\n" for name, value in {**shell, **profile}.items())
    extra = (
        f'[connections.box]\nplugin = "ssh"\nhost = "{sshd.host}"\nport = {sshd.port}\n'
        f'host_key = "{sshd.host_key_fingerprint()}"\ncredential = "login"\ninline_output_bytes = 4096\n{keys}\n'
        f'[credentials.login]\nusername = "{user.name}"\nprivate_key_file = "{key}"\n'
    )
    agent = agent_factory(control, extra=extra)
    api = control.api()
    wait_connected(api, [agent.name])
    return api


def run(api: Api, params: dict[str, object]) -> tuple[dict[str, object], list[dict[str, object]]]:
    job = api.wait_done(api.submit("ssh", {"connection": "box", **params})["id"])
    return job, api.records(str(job["id"]))


def test_commands_run_and_stream_through_the_relay_on_one_transport(
    control: ControlPlane, agent_factory: AgentFactory, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    api = start_agent(control, agent_factory, sshd, test_user, client_key)
    job, records = run(api, {"command": "cat; echo err >&2; exit 3", "stdin": "from the job\n"})
    assert "succeeded" == job["state"], job  # the command's failure is its exit code, not the job's
    assert [{"exit_code": 3, "stdout": "from the job\n", "stderr": "err\n"}] == records

    # Past inline_output_bytes the output streams as chunks with offsets, then a final record.
    size = 300_000
    job, records = run(api, {"command": f"head -c {size} /dev/zero | tr '\\0' y"})
    assert "succeeded" == job["state"], job
    *chunks, final = records
    assert {"exit_code": 0, "stdout_bytes": size, "stderr_bytes": 0, "streamed": True} == final
    offset = 0
    for chunk in chunks:
        assert (chunk["stream"], chunk["offset"]) == ("stdout", offset)
        offset += len(str(chunk["data"]))
    assert "y" * size == "".join(str(c["data"]) for c in chunks)

    # Twenty more jobs: still the one login the first job made.
    for i in range(20):
        _job, records = run(api, {"command": f"echo {i}"})
        assert [{"exit_code": 0, "stdout": f"{i}\n", "stderr": ""}] == records
    assert 1 == sshd.log_tail(5000).count("Accepted publickey")


def test_cancel_through_the_api_ends_the_remote_process(
    control: ControlPlane, agent_factory: AgentFactory, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    api = start_agent(control, agent_factory, sshd, test_user, client_key)
    marker = f"bh{uuid.uuid4().hex[:12]}"
    seconds = 300 + int(uuid.uuid4().int % 1000)  # the sleep's own command line, told apart
    job = api.submit("ssh", {"connection": "box", "command": f"sleep {seconds}; echo {marker}"})

    def remote() -> list[str]:
        """The shell running the command, and the sleep it started (sshd signals the group)."""
        found = subprocess.run(
            ["pgrep", "-u", test_user.name, "-af", f"{marker}|sleep {seconds}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return [line for line in found.stdout.splitlines() if "pgrep" not in line]

    wait_until(lambda: len(remote()) == 2, 10, "the remote shell and its sleep to start")
    status, _body = api.request("POST", f"/api/v1/jobs/{job['id']}/cancel")
    assert status in (200, 202)
    ended = api.wait_done(str(job["id"]))
    assert "cancelled" == ended["state"], ended
    wait_until(lambda: not remote(), 5, "the remote shell and its sleep to end")


def test_a_refused_command_fails_before_any_connection(
    control: ControlPlane, agent_factory: AgentFactory, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    api = start_agent(control, agent_factory, sshd, test_user, client_key, allowed_commands='["echo *"]')
    before = sshd.log_tail(5000).count("Connection from")  # the fixture's own readiness probe
    job, records = run(api, {"command": "rm -rf /tmp/anything"})
    assert ("failed", "policy_denied") == (job["state"], job["error"]["code"]), job  # type: ignore[index]
    assert [] == records
    assert before == sshd.log_tail(5000).count("Connection from")  # the agent never connected
    job, records = run(api, {"command": "echo allowed"})
    assert [{"exit_code": 0, "stdout": "allowed\n", "stderr": ""}] == records
    # An argv as a JSON list, through the relay: its hostile argument is echo's, not the shell's.
    job, records = run(api, {"command": ["echo", "a; id", "$(id)"]})
    assert [{"exit_code": 0, "stdout": "a; id $(id)\n", "stderr": ""}] == records
