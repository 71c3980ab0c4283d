"""The OpenSSH test server itself (tests/sshd.py), against Debian's real sshd, with paramiko as client.

Nothing here skips but the sudo test (sudo is a separate package): without sshd these tests fail,
so a machine that cannot run the SSH integration tests says so.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from bridgehead_testing.harness import scaled
from bridgehead_testing.sshd import (
    SSH_KEYGEN,
    SSHD,
    SUDO,
    SUDOERS_DIR,
    TEST_PASSWORD,
    TEST_USER,
    Sshd,
    SshdError,
    TestUser,
    ensure_test_user,
    make_client_key,
)

# ``sshd`` (function scope) and ``test_user`` (session scope) are in conftest.py.


@pytest.fixture
def client_key(tmp_path: Path, sshd: Sshd, test_user: TestUser) -> Path:
    """An unencrypted ed25519 key that ``sshd`` accepts for the test user."""
    path, public = make_client_key(tmp_path / "id_ed25519")
    sshd.add_authorized_key(test_user.name, public)
    return path


@contextlib.contextmanager
def connected(
    server: Sshd,
    user: str = TEST_USER,
    *,
    key: Path | None = None,
    password: str | None = None,
    known_hosts: Path | None = None,
) -> Iterator[paramiko.SSHClient]:
    """A paramiko client that checks the host key against ``known_hosts`` (default: written now)."""
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(str(known_hosts or server.write_known_hosts(server.workdir / "known_hosts")))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            server.host,
            server.port,
            user,
            password=password,
            key_filename=str(key) if key else None,
            look_for_keys=False,
            allow_agent=False,
            timeout=scaled(10),
            banner_timeout=scaled(10),
            auth_timeout=scaled(10),
        )
        yield client
    finally:
        client.close()


def run(
    client: paramiko.SSHClient, command: str, stdin: bytes = b"", environment: dict[str, str] | None = None
) -> tuple[int, bytes, bytes]:
    """(exit status, stdout, stderr) of one command; ``stdin`` is sent, then EOF."""
    chan_in, chan_out, chan_err = client.exec_command(command, timeout=scaled(30), environment=environment)
    with chan_in, chan_out, chan_err:
        chan_in.write(stdin)
        chan_in.channel.shutdown_write()
        out, err = chan_out.read(), chan_err.read()
        return chan_out.channel.recv_exit_status(), out, err


def process_state(pid: int) -> str | None:
    """The one-letter state in /proc/<pid>/stat, or None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def test_openssh_is_installed() -> None:
    for binary in (SSHD, SSH_KEYGEN):
        assert os.access(binary, os.X_OK), f"{binary} missing: apt-get install openssh-server"


# --- the account ---------------------------------------------------------------------------------


def test_test_user_is_idempotent_and_unlocked(test_user: TestUser) -> None:
    again = ensure_test_user()
    assert again == test_user
    assert (test_user.name, test_user.password) == (TEST_USER, TEST_PASSWORD)
    assert test_user.home.is_dir() and test_user.uid > 0
    shadow = {line.split(":")[0]: line.split(":") for line in Path("/etc/shadow").read_text().splitlines()}
    # A hash, not "!" (locked: sshd with UsePAM no then refuses even keys) nor "*" or empty.
    assert shadow[TEST_USER][1].startswith("$"), shadow[TEST_USER][1][:3]


# --- authentication and commands -----------------------------------------------------------------


def test_key_auth_runs_a_command(sshd: Sshd, client_key: Path) -> None:
    with connected(sshd, key=client_key) as client:
        assert run(client, "echo hello") == (0, b"hello\n", b"")
    assert "Accepted publickey for bhtest" in sshd.log_tail()


def test_encrypted_client_key(tmp_path: Path, sshd: Sshd, test_user: TestUser) -> None:
    path, public = make_client_key(tmp_path / "id_encrypted", passphrase="key-secret")  # noqa: S106
    assert path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    with pytest.raises(paramiko.PasswordRequiredException):
        paramiko.Ed25519Key.from_private_key_file(str(path))
    key = paramiko.Ed25519Key.from_private_key_file(str(path), password="key-secret")  # noqa: S106
    assert f"{key.get_name()} {key.get_base64()}" == " ".join(public.split()[:2])
    sshd.add_authorized_key(test_user.name, public)
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(str(sshd.write_known_hosts(tmp_path / "known_hosts")))
        client.connect(sshd.host, sshd.port, test_user.name, pkey=key, look_for_keys=False, allow_agent=False)
        assert run(client, "id -un") == (0, b"bhtest\n", b"")
    finally:
        client.close()


def test_a_key_not_authorized_is_refused(tmp_path: Path, sshd: Sshd) -> None:
    path, _ = make_client_key(tmp_path / "stranger")
    with pytest.raises(paramiko.AuthenticationException), connected(sshd, key=path):
        pass


def test_password_auth(sshd: Sshd, test_user: TestUser) -> None:
    with connected(sshd, password=test_user.password) as client:
        assert run(client, "id -u") == (0, f"{test_user.uid}\n".encode(), b"")


def test_wrong_password_is_refused(sshd: Sshd) -> None:
    with pytest.raises(paramiko.AuthenticationException), connected(sshd, password="wrong"):  # noqa: S106
        pass
    assert "Failed password for bhtest" in sshd.log_tail()
    # No lock-out of 127.0.0.1 afterwards (PerSourcePenalties, OpenSSH >= 9.8).
    with connected(sshd, password=TEST_PASSWORD) as client:
        assert run(client, "true")[0] == 0


def test_root_and_other_users_are_refused(sshd: Sshd) -> None:
    for user in ("root", "nobody"):
        with pytest.raises(paramiko.AuthenticationException), connected(sshd, user, password=TEST_PASSWORD):
            pass


def test_shell_commands(sshd: Sshd, client_key: Path) -> None:
    payload = bytes(range(256)) * 64  # binary, both ways
    with connected(sshd, key=client_key) as client:
        assert run(client, "cat", stdin=payload) == (0, payload, b"")
        assert run(client, "printf '%s-%d\\n' a 1; head -c 5 /dev/zero | od -An -c | tr -d ' \\n'") == (
            0,
            b"a-1\n\\0\\0\\0\\0\\0",
            b"",
        )
        assert run(client, "sh -c 'echo out; echo err >&2; exit 7'") == (7, b"out\n", b"err\n")
        started = time.monotonic()
        assert run(client, "sleep 0.5")[0] == 0
        assert time.monotonic() - started >= 0.5
        # AcceptEnv BH_*: other variables are dropped (sshd logs that it refused them).
        assert run(client, 'echo "$BH_ONE|$OTHER"', environment={"BH_ONE": "x y", "OTHER": "no"}) == (
            0,
            b"x y|\n",
            b"",
        )
        status, out, _ = run(client, "pwd; echo $HOME; echo $SSH_CONNECTION")
        assert status == 0
        cwd, home, connection = out.decode().splitlines()
        assert cwd == home == "/home/bhtest"
        assert connection.split()[2:] == ["127.0.0.1", str(sshd.port)]


def test_sftp(sshd: Sshd, client_key: Path, test_user: TestUser) -> None:
    name = f"sftp-{secrets.token_hex(4)}"
    with connected(sshd, key=client_key) as client, client.open_sftp() as sftp:
        with sftp.open(name, "wb") as f:
            f.write(b"over sftp\n")
        try:
            assert run(client, f"cat {name}") == (0, b"over sftp\n", b"")
        finally:
            sftp.remove(name)
    assert not (test_user.home / name).exists()


def test_many_connections_and_channels_at_once(sshd: Sshd, client_key: Path) -> None:
    # sshd's defaults would refuse these: MaxStartups 10:30:100 drops unauthenticated connections
    # at random past 10, MaxSessions 10 refuses an 11th channel on one connection.
    errors: list[BaseException] = []
    barrier = threading.Barrier(30)

    def one() -> None:
        try:
            barrier.wait(timeout=scaled(10))
            with connected(sshd, key=client_key, known_hosts=known_hosts) as client:
                assert run(client, "echo ok") == (0, b"ok\n", b"")
        except BaseException as exc:
            errors.append(exc)

    known_hosts = sshd.write_known_hosts(sshd.workdir / "known_hosts")
    threads = [threading.Thread(target=one) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=scaled(60))
    assert not errors, errors[:3]

    with connected(sshd, key=client_key) as client:
        transport = client.get_transport()
        assert transport is not None
        channels = [transport.open_session(timeout=scaled(10)) for _ in range(40)]
        try:
            for chan in channels:
                chan.exec_command("cat")
            for i, chan in enumerate(channels):
                chan.sendall(f"{i}\n".encode())
                chan.shutdown_write()
            for i, chan in enumerate(channels):
                assert chan.makefile("rb").read() == f"{i}\n".encode()
                assert chan.recv_exit_status() == 0
        finally:
            for chan in channels:
                chan.close()


# --- host keys -----------------------------------------------------------------------------------


def test_host_key_fingerprint(sshd: Sshd, client_key: Path) -> None:
    reported = sshd.host_key_fingerprint()
    assert reported.startswith("SHA256:") and not reported.endswith("=")
    keygen = subprocess.run(
        [str(SSH_KEYGEN), "-l", "-f", str(sshd.host_keys["ed25519"])], capture_output=True, text=True, check=True
    )
    assert keygen.stdout.split()[1] == reported
    with connected(sshd, key=client_key) as client:
        transport = client.get_transport()
        assert transport is not None
        seen = transport.get_remote_server_key()
    assert seen.get_name() == "ssh-ed25519"
    assert seen.fingerprint == reported


def test_known_hosts_line(tmp_path: Path, sshd: Sshd, client_key: Path) -> None:
    line = sshd.known_hosts_line()
    assert line.startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 AAAA")
    assert len(line.split()) == 3
    # OpenSSH's own client finds it under the [host]:port name.
    path = sshd.write_known_hosts(tmp_path / "known_hosts")
    found = subprocess.run(
        [str(SSH_KEYGEN), "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(path)], capture_output=True, text=True
    )
    assert found.returncode == 0 and line in found.stdout
    # A known_hosts with another key for this host:port is refused (RejectPolicy does not apply:
    # a mismatch always raises).
    other = Sshd(tmp_path / "other")
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {other.host_public_line()}\n")
    with pytest.raises(paramiko.BadHostKeyException), connected(sshd, key=client_key, known_hosts=wrong):
        pass


def test_rsa_host_key_too(tmp_path: Path, test_user: TestUser) -> None:
    with Sshd(tmp_path / "rsa", rsa=True) as server:
        assert set(server.host_keys) == {"ed25519", "rsa"}
        path, public = make_client_key(tmp_path / "id_rsa", key_type="rsa")
        server.add_authorized_key(test_user.name, public)
        client = paramiko.SSHClient()
        try:
            # Only the RSA line known: paramiko then asks for an RSA host key.
            known = tmp_path / "known_rsa"
            known.write_text(server.known_hosts_line("rsa") + "\n")
            client.load_host_keys(str(known))
            client.connect(server.host, server.port, test_user.name, key_filename=str(path), look_for_keys=False)
            transport = client.get_transport()
            assert transport is not None
            assert transport.get_remote_server_key().fingerprint == server.host_key_fingerprint("rsa")
            assert run(client, "echo rsa") == (0, b"rsa\n", b"")
        finally:
            client.close()


# --- two servers: a jump host --------------------------------------------------------------------


def test_jump_to_a_second_server(tmp_path: Path, sshd: Sshd, client_key: Path, test_user: TestUser) -> None:
    with Sshd(tmp_path / "target") as target:
        assert target.port != sshd.port and target.pid != sshd.pid
        target.add_authorized_key(test_user.name, client_key.with_name(client_key.name + ".pub").read_text())
        with connected(sshd, key=client_key) as jump:
            jump_transport = jump.get_transport()
            assert jump_transport is not None
            channel = jump_transport.open_channel(
                "direct-tcpip", (target.host, target.port), ("127.0.0.1", 0), timeout=scaled(10)
            )
            # A Transport over the forwarded channel: the target's own key exchange and auth.
            hop = paramiko.Transport(channel)
            try:
                hop.start_client(timeout=scaled(10))
                assert hop.get_remote_server_key().fingerprint == target.host_key_fingerprint()
                assert hop.get_remote_server_key().fingerprint != sshd.host_key_fingerprint()
                hop.auth_publickey(test_user.name, paramiko.Ed25519Key.from_private_key_file(str(client_key)))
                session = hop.open_session(timeout=scaled(10))
                session.exec_command("echo via-jump; echo $SSH_CONNECTION")
                out = session.makefile("rb").read()
                assert session.recv_exit_status() == 0
            finally:
                hop.close()
    # The target saw a connection from the jump host's loopback address, to its own port.
    first, second = out.decode().splitlines()
    assert first == "via-jump"
    assert second.split()[2:] == ["127.0.0.1", str(target.port)]


# --- sudo ----------------------------------------------------------------------------------------


@pytest.mark.skipif(not SUDO.exists(), reason="sudo is not installed: apt-get install sudo")
def test_sudo_with_the_password(sshd: Sshd, client_key: Path, test_user: TestUser) -> None:
    assert (SUDOERS_DIR / test_user.name).exists()
    with connected(sshd, key=client_key) as client:
        # Nothing on stderr: no first-use lecture, no "unable to resolve host".
        assert run(client, "sudo -S -p '' id -u", stdin=f"{test_user.password}\n".encode()) == (0, b"0\n", b"")
        # Asked every time (no timestamp), and a wrong password fails (after PAM's ~1.5 s delay).
        status, out, _ = run(client, "sudo -S -p '' id -u", stdin=b"wrong\n")
        assert status != 0 and out == b""
        # Without a password on stdin: refused, not hung (-S reads EOF).
        assert run(client, "sudo -S -p '' true")[0] != 0


# --- process life ---------------------------------------------------------------------------------


def test_stop_then_connect_fails_and_restart_keeps_the_host_key(sshd: Sshd, client_key: Path) -> None:
    fingerprint, port, first_pid = sshd.host_key_fingerprint(), sshd.port, sshd.pid
    assert first_pid is not None and sshd.running
    sshd.stop()
    assert not sshd.running and sshd.pid is None
    assert process_state(first_pid) in (None, "Z")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((sshd.host, port), timeout=5).close()
    with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError), connected(sshd, key=client_key):
        pass
    sshd.stop()  # idempotent

    sshd.restart()
    assert sshd.running and sshd.pid not in (None, first_pid)
    assert sshd.port == port  # nothing took it in between
    with connected(sshd, key=client_key) as client:
        transport = client.get_transport()
        assert transport is not None
        assert transport.get_remote_server_key().fingerprint == fingerprint
        assert run(client, "echo again") == (0, b"again\n", b"")


def test_stop_kills_sessions_and_their_orphans(sshd: Sshd, client_key: Path) -> None:
    with connected(sshd, key=client_key) as client:
        # A background job that outlives its shell: reparented away from sshd, found by its
        # SSH_CONNECTION.
        status, out, _ = run(client, "nohup sleep 300 >/dev/null 2>&1 & echo $!")
        assert status == 0
        orphan = int(out)
        # A command still running in an open session.
        _, stdout, _ = client.exec_command("echo $$; exec sleep 300")
        session = int(stdout.readline())
        for pid in (orphan, session):
            assert process_state(pid) not in (None, "Z")
        sshd.stop()
        # The client sees the connection end.
        assert stdout.channel.recv_exit_status() == -1
    for pid in (orphan, session):
        assert process_state(pid) in (None, "Z")


def test_start_failure_raises_with_the_log(tmp_path: Path) -> None:
    server = Sshd(tmp_path / "bad", extra_config=["NoSuchOption yes"])
    with pytest.raises(SshdError, match="(?s)exited 255 during start.*NoSuchOption"):
        server.start()
    assert not server.running


def test_extra_config_overrides_the_defaults(tmp_path: Path, test_user: TestUser) -> None:
    with Sshd(tmp_path / "strict", extra_config=["PasswordAuthentication no"]) as server:
        with pytest.raises(paramiko.AuthenticationException), connected(server, password=test_user.password):
            pass
        server.extra_config = []
        server.restart()
        with connected(server, password=test_user.password) as client:
            assert run(client, "true")[0] == 0
