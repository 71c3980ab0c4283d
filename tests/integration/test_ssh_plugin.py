"""The ssh plugin in-process (as the agent runs it) against a real OpenSSH sshd the tests start:
authentication, host keys, policy, output, stdin, timeouts, cancel, sudo and transport reuse."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.counting_sink import CountingSink
from bridgehead_testing.harness import scaled, wait_until_async
from bridgehead_testing.sshd import Sshd, TestUser, make_client_key

from bridgehead.core.errors import JobError
from bridgehead.plugins.ssh import SshPlugin
from bridgehead.sdk import Credential, JobContext
from bridgehead.sdk.testing import run_plugin

WRONG_PASSWORD = "Wr0ng-ssh-pw-3f9a"  # noqa: S105 - looked for in messages
PASSPHRASE = "open sesame"  # noqa: S105 - a throw-away key's passphrase


@pytest.fixture
async def plugin() -> Any:
    p = SshPlugin()
    yield p
    await p.aclose()


@pytest.fixture
def client_key(tmp_path: Path, sshd: Sshd, test_user: TestUser) -> Path:
    private, public = make_client_key(tmp_path / "id_ed25519")
    sshd.add_authorized_key(test_user.name, public)
    return private


def pinned(sshd: Sshd, **keys: Any) -> dict[str, Any]:
    # These tests give shell lines (pipes, ;, redirections): allow_shell, unless the test gives
    # an allow-list (argv commands are test_command_policy.py's).
    shell = {} if "allowed_commands" in keys else {"allow_shell": True}
    return {
        "host": sshd.host,
        "port": sshd.port,
        "host_key": sshd.host_key_fingerprint(),
        "credential": "c",
        **shell,
        **keys,
    }


async def ssh(
    plugin: SshPlugin, profile: dict[str, Any], credential: Credential, params: dict[str, Any], timeout_s: float = 60
) -> list[dict[str, Any]]:
    return await run_plugin(
        plugin, {"connection": "box", **params}, profile=profile, credential=credential, timeout_s=timeout_s
    )


async def failure(
    plugin: SshPlugin, profile: dict[str, Any], credential: Credential, params: dict[str, Any]
) -> JobError:
    with pytest.raises(JobError) as caught:
        await ssh(plugin, profile, credential, params)
    return caught.value


def remote_processes(user: TestUser, marker: str) -> list[str]:
    found = subprocess.run(["pgrep", "-u", user.name, "-af", marker], capture_output=True, text=True, check=False)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


# --- authentication ------------------------------------------------------------------------


async def test_key_auth_gives_exit_code_stdout_and_stderr(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    records = await ssh(plugin, pinned(sshd), key, {"command": "echo out; echo err >&2; id -un; exit 3"})
    assert [{"exit_code": 3, "stdout": f"out\n{test_user.name}\n", "stderr": "err\n"}] == records


async def test_password_auth(plugin: SshPlugin, sshd: Sshd, test_user: TestUser) -> None:
    password = Credential(username=test_user.name, password=test_user.password)
    assert [{"exit_code": 0, "stdout": "pw\n", "stderr": ""}] == await ssh(
        plugin, pinned(sshd), password, {"command": "echo pw"}
    )


async def test_encrypted_key_with_its_passphrase(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, tmp_path: Path
) -> None:
    private, public = make_client_key(tmp_path / "id_locked", passphrase=PASSPHRASE)
    sshd.add_authorized_key(test_user.name, public)
    key = Credential(username=test_user.name, private_key_file=str(private), passphrase=PASSPHRASE)
    assert "locked\n" == (await ssh(plugin, pinned(sshd), key, {"command": "echo locked"}))[0]["stdout"]


async def test_wrong_password_is_auth_failed_and_not_shown(plugin: SshPlugin, sshd: Sshd, test_user: TestUser) -> None:
    error = await failure(
        plugin, pinned(sshd), Credential(username=test_user.name, password=WRONG_PASSWORD), {"command": "true"}
    )
    assert "auth_failed" == error.code, error.message
    assert WRONG_PASSWORD not in error.message


# --- host keys: nothing runs on a server that cannot prove who it is -------------------------


@pytest.mark.parametrize("case", ["unknown", "changed", "pinned_other"])
async def test_a_host_key_not_the_expected_one_is_refused_and_nothing_runs(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path, tmp_path: Path, case: str
) -> None:
    known_hosts = tmp_path / "known_hosts"
    other = Sshd(tmp_path / "other")  # another server's key, never started
    if case == "unknown":
        known_hosts.write_text("")
        profile = pinned(sshd, host_key=None, known_hosts=str(known_hosts))
    elif case == "changed":
        known_hosts.write_text(
            other.known_hosts_line().replace(f"[{other.host}]:{other.port}", f"[{sshd.host}]:{sshd.port}") + "\n"
        )
        profile = pinned(sshd, host_key=None, known_hosts=str(known_hosts))
    else:
        profile = pinned(sshd, host_key=other.host_key_fingerprint())
    marker = tmp_path / f"ran-{uuid.uuid4().hex}"
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    error = await failure(plugin, profile, key, {"command": f"touch {marker}"})
    expected = {"unknown": "host_key_unknown", "changed": "host_key_changed", "pinned_other": "host_key_mismatch"}
    assert expected[case] == error.code, error.message
    assert sshd.host in error.message and sshd.host_key_fingerprint() in error.message
    if case != "unknown":
        assert other.host_key_fingerprint() in error.message  # both fingerprints named
    assert not marker.exists()
    assert "Accepted" not in sshd.log_tail(200)  # no login happened


async def test_known_hosts_and_trust_on_first_use(
    plugin: SshPlugin,
    sshd: Sshd,
    test_user: TestUser,
    client_key: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    known_hosts = sshd.write_known_hosts(tmp_path / "known_hosts")
    profile = pinned(sshd, host_key=None, known_hosts=str(known_hosts))
    assert 0 == (await ssh(plugin, profile, key, {"command": "true"}))[0]["exit_code"]
    recorded = tmp_path / "tofu_known_hosts"
    recorded.write_text("")
    tofu = pinned(sshd, host_key=None, known_hosts=str(recorded), trust_on_first_use=True)
    with caplog.at_level(logging.WARNING, logger="bridgehead.plugins.ssh"):
        assert 0 == (await ssh(SshPlugin(), tofu, key, {"command": "true"}))[0]["exit_code"]
    assert sshd.host_key_fingerprint() in caplog.text
    assert f"[{sshd.host}]:{sshd.port} ssh-ed25519 " in recorded.read_text()


# --- policy --------------------------------------------------------------------------------


async def test_a_command_outside_allowed_commands_is_refused_before_connecting(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    profile = pinned(sshd, allowed_commands=["echo *", "uptime"])
    assert "ok\n" == (await ssh(plugin, profile, key, {"command": "echo ok"}))[0]["stdout"]
    before = sshd.log_tail(1000).count("Connection from")
    error = await failure(SshPlugin(), profile, key, {"command": "rm -rf /tmp/x"})
    assert "policy_denied" == error.code
    assert before == sshd.log_tail(1000).count("Connection from")


# --- output, stdin, env ----------------------------------------------------------------------


async def test_stdin_and_env(plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path) -> None:
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    records = await ssh(
        plugin,
        pinned(sshd),
        key,
        {"command": 'cat; echo "[$BH_MODE]"', "stdin": "line é\n", "env": {"BH_MODE": "audit"}},
    )
    assert "line é\n[audit]\n" == records[0]["stdout"]


async def test_a_hundred_megabytes_of_output_stream_in_bounded_memory(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    size = 100 * 1024 * 1024
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    sink = CountingSink()
    ctx: JobContext[Any] = JobContext(
        job_id="j",
        attempt=1,
        profile=plugin.profile_type(plugin="ssh", **pinned(sshd)),
        credential=key,
        sink=sink,
        deadline=time.monotonic() + scaled(300),
        max_record_bytes=1 << 20,
        logger=logging.getLogger("test"),
    )
    params = plugin.params_type(connection="box", command=f"head -c {size} /dev/zero | tr '\\0' x; echo done >&2")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    await plugin.run(ctx, params)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert {"stdout": size, "stderr": 5} == sink.bytes
    assert {"exit_code": 0, "stdout_bytes": size, "stderr_bytes": 5, "streamed": True} == sink.final
    assert grown_mib < 60, f"peak RSS grew {grown_mib:.0f} MiB for 100 MiB of output"


# --- timeouts and cancel -------------------------------------------------------------------


async def test_a_timeout_leaves_no_process_on_the_server(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    marker = f"bh{uuid.uuid4().hex[:12]}"
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    started = time.monotonic()
    timeout_s = scaled(2)
    job = asyncio.create_task(
        failure(plugin, pinned(sshd), key, {"command": f"sleep 300; echo {marker}", "timeout_s": timeout_s})
    )
    # The premise: the command really runs on the server before its timeout ends it.
    await wait_until_async(lambda: remote_processes(test_user, marker), timeout_s, "the remote command to start")
    error = await job
    assert "command_timeout" == error.code, error.message
    assert time.monotonic() - started < timeout_s + scaled(7)
    await wait_until_async(lambda: not remote_processes(test_user, marker), 5, "the remote command to end")
    # The transport is still good for the next command.
    assert 0 == (await ssh(plugin, pinned(sshd), key, {"command": "true"}))[0]["exit_code"]


async def test_cancel_mid_command_ends_the_remote_process(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    marker = f"bh{uuid.uuid4().hex[:12]}"
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    job = asyncio.create_task(ssh(plugin, pinned(sshd), key, {"command": f"sleep 300; echo {marker}"}))
    await wait_until_async(lambda: remote_processes(test_user, marker), 10, "the remote command to start")
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await wait_until_async(lambda: not remote_processes(test_user, marker), 5, "the remote command to end")


# --- sudo and reuse ------------------------------------------------------------------------


async def test_sudo_with_the_credentials_password(plugin: SshPlugin, sshd: Sshd, test_user: TestUser) -> None:
    password = Credential(username=test_user.name, password=test_user.password)
    records = await ssh(plugin, pinned(sshd), password, {"command": "id -u", "sudo": True})
    assert [{"exit_code": 0, "stdout": "0\n", "stderr": ""}] == records


async def test_twenty_jobs_reuse_one_transport(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    for i in range(20):
        assert f"{i}\n" == (await ssh(plugin, pinned(sshd), key, {"command": f"echo {i}"}))[0]["stdout"]
    assert 1 == sshd.log_tail(2000).count("Accepted publickey")
    # The pooled transport's socket has Nagle off: with it on, each command waited ~40 ms
    # for the server's delayed ACK (bench/ssh_latency.py measures the difference).
    (pool,) = plugin.hosts.pools()
    assert pool._transport is not None
    assert pool._transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_each_command_after_the_first_finds_its_session_open(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    """The pool opens the next session channel as a command ends, so the next command starts
    without a round trip to open one; ``spare_session = false`` turns that off."""
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    for i in range(5):
        assert f"{i}\n" == (await ssh(plugin, pinned(sshd), key, {"command": f"echo {i}"}))[0]["stdout"]
    (pool,) = plugin.hosts.pools()
    assert (1, 4) == (pool.connects, pool.spares_used)

    plain = SshPlugin()
    try:
        for _ in range(3):
            await ssh(plain, pinned(sshd, spare_session=False), key, {"command": "true"})
        (pool,) = plain.hosts.pools()
        assert (1, 0) == (pool.connects, pool.spares_used)
    finally:
        await plain.aclose()


async def test_sessions_stay_within_a_server_max_sessions_equal_to_the_profile(
    plugin: SshPlugin, test_user: TestUser, client_key: Path, tmp_path: Path
) -> None:
    """With the server's MaxSessions equal to the profile's max_sessions, the spare never makes
    one session too many: commands and a file transfer at once, round after round, all run."""
    small = Sshd(tmp_path / "small", users=[test_user.name], extra_config=["MaxSessions 2"])
    small.add_authorized_key(test_user.name, Path(str(client_key) + ".pub").read_text().strip())
    small.start()
    area = test_user.home / f"bh-sessions-{uuid.uuid4().hex[:8]}"
    try:
        area.mkdir()
        (area / "f.txt").write_text("x")
        key = Credential(username=test_user.name, private_key_file=str(client_key))
        profile = pinned(small, max_sessions=2, sftp_paths=[f"{area}/*"])
        get = {"op": "get", "path": str(area / "f.txt")}
        for i in range(6):
            # Two transfers at once with the spare open: each must take a session from the
            # pool (the spare, then one more), or the server sees three.
            jobs = [ssh(plugin, profile, key, get), ssh(plugin, profile, key, get)] if i % 2 else []
            jobs += [
                ssh(plugin, profile, key, {"command": f"sleep 0.1; echo {i}"}),
                ssh(plugin, profile, key, {"command": "true"}),  # waits for a slot
            ]
            *_, last, _ = await asyncio.gather(*jobs)
            assert f"{i}\n" == last[0]["stdout"]
        (pool,) = plugin.hosts.pools()
        assert pool.connects == 1 and pool.spares_used > 0
        # Refusals ("no more sessions") may happen while a close is on its way: they are
        # waited out, and nothing the plugin sends makes sshd drop the connection.
        assert "nonexistent channel" not in small.log_tail(5000)
    finally:
        small.stop()
        subprocess.run(["rm", "-rf", str(area)], check=False)


async def test_commands_leave_no_file_descriptors_behind(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    """Each command's channel gets a pipe for the event loop to watch (two descriptors); they
    must be closed with it, or a busy agent runs out of descriptors."""
    key = Credential(username=test_user.name, private_key_file=str(client_key))

    def open_fds() -> int:
        return len(list(Path("/proc/self/fd").iterdir()))

    for _ in range(3):
        await ssh(plugin, pinned(sshd), key, {"command": "echo warm"})
    (pool,) = plugin.hosts.pools()

    def spare_open() -> bool:
        return pool._spare is not None and pool._spare.done()

    await wait_until_async(spare_open, 10, "the spare session to open")
    before = open_fds()
    for i in range(40):
        await ssh(plugin, pinned(sshd), key, {"command": f"echo {i}; echo e >&2"})
    await wait_until_async(spare_open, 10, "the spare session to open")
    # Channels close as the server's close arrives: wait for that, not a set time. A leak
    # (two descriptors a command, 80 here) never gets within the bound and times out.
    await wait_until_async(lambda: open_fds() - before <= 2, 5, f"descriptors back to {before} + 2 at most")


async def test_an_idle_transport_is_closed_after_idle_timeout_s(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    await ssh(plugin, pinned(sshd, idle_timeout_s=0.5), key, {"command": "true"})
    (pool,) = plugin.hosts.pools()
    transport = pool._transport
    assert transport is not None and transport.is_active()
    # Behaviour about time (the idle timeout fires): bounded, with the shared scale.
    await wait_until_async(lambda: not transport.is_active(), 5, "the idle transport to close")
    assert pool._transport is None
    # The next command connects afresh.
    assert 0 == (await ssh(plugin, pinned(sshd, idle_timeout_s=0.5), key, {"command": "true"}))[0]["exit_code"]
    assert 2 == pool.connects


async def test_output_read_by_threads_where_the_loop_cannot_watch_the_channel(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows' proactor loop has no add_reader: there, worker threads read stdout and stderr.
    The same real commands go through that path here."""
    import bridgehead.plugins.ssh.command  # noqa: PLC0415

    async def no_pipe_watching(*_args: Any) -> bool:
        return False

    monkeypatch.setattr(bridgehead.plugins.ssh.command.Command, "_pump_polled", no_pipe_watching)
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    records = await ssh(plugin, pinned(sshd), key, {"command": "cat; echo err >&2; exit 3", "stdin": "in\n"})
    assert [{"exit_code": 3, "stdout": "in\n", "stderr": "err\n"}] == records
    streamed = await ssh(plugin, pinned(sshd, inline_output_bytes=1024), key, {"command": "head -c 300000 /dev/zero"})
    assert 300_000 == streamed[-1]["stdout_bytes"] and streamed[-1]["streamed"]


async def test_a_server_that_went_away_is_source_unavailable_and_replaced(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    assert 0 == (await ssh(plugin, pinned(sshd), key, {"command": "true"}))[0]["exit_code"]
    sshd.stop()
    error = await failure(plugin, pinned(sshd), key, {"command": "true"})
    assert "source_unavailable" == error.code, error.message
    sshd.start()
    assert 0 == (await ssh(plugin, pinned(sshd), key, {"command": "true"}))[0]["exit_code"]


async def test_a_connection_cut_mid_command_is_source_unavailable_and_replaced(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    """The server side of the connection dies while a command runs (its sshd processes
    killed, as on a crash; the listener stays): the job fails at once, not at its timeout,
    and the next job connects afresh."""
    from bridgehead_testing.processes import descendants, freeze_and_kill  # noqa: PLC0415 - the fixture's own process tools

    marker = f"bh{uuid.uuid4().hex[:12]}"
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    assert 0 == (await ssh(plugin, pinned(sshd), key, {"command": "true"}))[0]["exit_code"]
    job = asyncio.create_task(failure(plugin, pinned(sshd), key, {"command": f"sleep 60; echo {marker}"}))
    await wait_until_async(lambda: remote_processes(test_user, marker), 10, "the remote command to start")
    listener = sshd._proc
    assert listener is not None
    cut = time.monotonic()
    await asyncio.to_thread(freeze_and_kill, lambda: descendants(listener.pid))
    error = await asyncio.wait_for(job, scaled(10))
    assert "source_unavailable" == error.code, error.message
    assert time.monotonic() - cut < scaled(5)
    assert 0 == (await ssh(plugin, pinned(sshd), key, {"command": "true"}))[0]["exit_code"]
    (pool,) = plugin.hosts.pools()
    assert 2 == pool.connects


async def test_a_jump_host_carries_the_connection(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path, tmp_path: Path
) -> None:
    """The target is reached through a direct-tcpip channel of the bastion's transport: both
    logins happen, each host's key is checked, and with the bastion gone the target is out of
    reach although it still runs."""
    target = Sshd(tmp_path / "target", users=[test_user.name])
    target.add_authorized_key(test_user.name, Path(str(client_key) + ".pub").read_text().strip())
    target.start()
    try:
        key = Credential(username=test_user.name, private_key_file=str(client_key))
        bastion = (pinned(sshd), key)
        records = await run_plugin(
            plugin,
            {"connection": "inner", "command": "echo via-jump"},
            profile=pinned(target, jump="bastion"),
            credential=key,
            other_connections={"bastion": bastion},
        )
        assert [{"exit_code": 0, "stdout": "via-jump\n", "stderr": ""}] == records
        assert 1 == sshd.log_tail(500).count("Accepted publickey")
        assert 1 == target.log_tail(500).count("Accepted publickey")
        # A wrong pin for the target is refused even through the jump.
        other = Sshd(tmp_path / "other")
        with pytest.raises(JobError) as caught:
            await run_plugin(
                SshPlugin(),
                {"connection": "inner", "command": "true"},
                profile=pinned(target, jump="bastion", host_key=other.host_key_fingerprint()),
                credential=key,
                other_connections={"bastion": bastion},
            )
        assert "host_key_mismatch" == caught.value.code
        sshd.stop()
        with pytest.raises(JobError) as caught:
            await run_plugin(
                plugin,
                {"connection": "inner", "command": "true"},
                profile=pinned(target, jump="bastion"),
                credential=key,
                other_connections={"bastion": bastion},
            )
        assert "source_unavailable" == caught.value.code, caught.value.message
    finally:
        target.stop()


async def test_a_jump_to_a_missing_profile_is_a_clear_error(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    key = Credential(username=test_user.name, private_key_file=str(client_key))
    error = await failure(plugin, pinned(sshd, jump="nowhere"), key, {"command": "true"})
    assert "invalid_profile" == error.code and "nowhere" in error.message, error.message


# --- files over SFTP -----------------------------------------------------------------------


async def test_get_and_put_files_within_sftp_paths(
    plugin: SshPlugin, sshd: Sshd, test_user: TestUser, client_key: Path
) -> None:
    import base64  # noqa: PLC0415
    import hashlib  # noqa: PLC0415
    import os  # noqa: PLC0415

    key = Credential(username=test_user.name, private_key_file=str(client_key))
    area = test_user.home / f"bh-files-{uuid.uuid4().hex[:8]}"
    area.mkdir()
    os.chown(area, test_user.uid, test_user.gid)
    source = area / "report.bin"
    payload = os.urandom(1_000_000)
    source.write_bytes(payload)
    os.chown(source, test_user.uid, test_user.gid)
    profile = pinned(sshd, sftp_paths=[f"{area}/*"])
    try:
        records = await ssh(plugin, profile, key, {"op": "get", "path": str(source)})
        *chunks, final = records
        got = b"".join(base64.b64decode(c["data"]) for c in chunks)
        assert payload == got and [c["offset"] for c in chunks] == sorted(c["offset"] for c in chunks)
        assert {"path": str(source), "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()} == final

        target = area / "uploaded.txt"
        content = "héllo\n".encode() * 1000
        (done,) = await ssh(
            plugin, profile, key, {"op": "put", "path": str(target), "content": base64.b64encode(content).decode()}
        )
        assert (content, len(content)) == (target.read_bytes(), done["size"])
        assert target.stat().st_uid == test_user.uid  # written as the login user
        assert [] == [p.name for p in area.iterdir() if "bridgehead" in p.name]  # no temporary left

        missing = await failure(plugin, profile, key, {"op": "get", "path": f"{area}/nope"})
        assert "no_such_file" == missing.code
        small = await failure(plugin, {**profile, "max_file_bytes": 1000}, key, {"op": "get", "path": str(source)})
        assert "file_too_large" == small.code
        before = sshd.log_tail(1000).count("Connection from")
        outside = await failure(SshPlugin(), profile, key, {"op": "get", "path": "/etc/shadow"})
        assert "policy_denied" == outside.code
        with pytest.raises(JobError) as sneaky:
            await ssh(SshPlugin(), profile, key, {"op": "get", "path": f"{area}/../../../etc/shadow"})
        assert "invalid_params" == sneaky.value.code
        assert before == sshd.log_tail(1000).count("Connection from")  # refused before connecting
    finally:
        subprocess.run(["rm", "-rf", str(area)], check=False)
