"""A real OpenSSH server (Debian's ``sshd``) on loopback for integration tests.

``Sshd`` generates its own host keys and an ``sshd_config`` under one work directory, runs
``/usr/sbin/sshd -D -e`` as a child process on a free loopback port, and always stops it: its
sessions too, which sshd itself leaves running when the listener exits. ``ensure_test_user``
creates the local account sshd logs in as (sshd only knows real accounts), with a password, and
a sudo rule that asks for that password when sudo is installed. ``make_client_key`` writes a
client key pair with ssh-keygen, optionally encrypted.

Everything here needs root (sshd checks passwords in /etc/shadow itself and switches to the
user) and Linux (stop() finds the sessions in /proc, with ``processes``). The pytest fixtures
``sshd`` (a fresh server per test) and ``test_user`` (session scope) are in
tests/integration/conftest.py; this module needs no pytest, so that scripts can start a server
with it too.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import pwd
import re
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from bridgehead_testing.child_server import ChildServer
from bridgehead_testing.harness import free_port, scaled
from bridgehead_testing.processes import descendants, freeze_and_kill, live_processes, ssh_connection_to

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = Path("/usr/bin/ssh-keygen")
CAT = Path("/usr/bin/cat")
SUDO = Path("/usr/bin/sudo")
VISUDO = Path("/usr/sbin/visudo")
SUDOERS_DIR = Path("/etc/sudoers.d")
# sshd's privilege-separation directory: the pre-auth child chroots into it. The Debian package
# creates it at boot (tmpfiles.d) or in the ssh unit, neither of which runs in a container.
PRIVSEP_DIR = Path("/run/sshd")
# With UsePAM no, sshd refuses every non-root login while this file exists (pam_nologin's job
# otherwise); some images leave it behind from their build.
NOLOGIN = Path("/etc/nologin")

TEST_USER = "bhtest"
TEST_PASSWORD = "Bridgehead-test-pw-42"  # noqa: S105 - a throw-away local account for tests
SHELL = "/bin/bash"

KeyType = Literal["ed25519", "rsa", "ecdsa"]
# ssh-keygen -b for the types that take one; RSA 3072 is ssh-keygen's default and costs 0.4-1 s
# a key here (ed25519 and ecdsa: a few ms).
_KEY_BITS: dict[str, str] = {"rsa": "3072", "ecdsa": "256"}


class SshdError(RuntimeError):
    pass


# --- the test account ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TestUser:
    # Not a test class, whatever its name: without this, pytest tries to collect it wherever it is
    # imported and warns, which the suite's "error" filter turns into a failure.
    __test__: ClassVar[bool] = False

    name: str
    password: str
    home: Path
    uid: int
    gid: int


def _run_root_tool(args: Sequence[str], stdin: str | None = None, ok: tuple[int, ...] = (0,)) -> None:
    """Run a shadow-utils tool, retrying while another process holds /etc/passwd or /etc/shadow.

    useradd and chpasswd give up at once ("cannot lock /etc/shadow") rather than wait, and two
    pytest processes may set the account up at the same moment.
    """
    for attempt in range(20):
        result = subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=scaled(60))
        if result.returncode in ok:
            return
        if "lock" not in result.stderr or attempt == 19:
            raise SshdError(f"{args[0]} exited {result.returncode}: {result.stderr.strip()}")
        time.sleep(0.1)


def ensure_test_user(name: str = TEST_USER, password: str = TEST_PASSWORD) -> TestUser:
    """Create the local account ``name`` if it is missing and (re)set its password; idempotent.

    The password is set every time, not only on creation: useradd leaves the account locked
    ("!" in /etc/shadow), and with UsePAM no sshd refuses a locked account even for key
    authentication ("User bhtest not allowed because account is locked"). Setting it also resets
    the last-change date, so no password-ageing policy can expire it mid-session.

    When sudo is installed, ``/etc/sudoers.d/<name>`` lets the user run anything as root with its
    password (asked every time: no timestamp, and no first-use lecture on stderr).
    """
    if os.geteuid() != 0:
        raise SshdError("creating the test account needs root")
    if ":" in name or "\n" in password or ":" in password:
        raise ValueError("chpasswd takes name:password lines: no ':' or newline")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        # --user-group explicitly: Debian's login.defs enables it, other images may not. Exit code
        # 9 means another process created the account first, which is as good.
        _run_root_tool(["useradd", "--create-home", "--user-group", "--shell", SHELL, name], ok=(0, 9))
        entry = pwd.getpwnam(name)
    if entry.pw_shell != SHELL:
        _run_root_tool(["usermod", "--shell", SHELL, name])
        entry = pwd.getpwnam(name)
    _run_root_tool(["chpasswd"], stdin=f"{name}:{password}\n")
    if SUDO.exists():
        _write_sudo_rule(name)
    return TestUser(name=name, password=password, home=Path(entry.pw_dir), uid=entry.pw_uid, gid=entry.pw_gid)


def _write_sudo_rule(name: str) -> None:
    rule = (
        f"# Bridgehead tests: {name} may run anything as root, with its password, asked every time.\n"
        f"Defaults:{name} lecture=never, timestamp_timeout=0\n"
        f"{name} ALL=(ALL) ALL\n"
    )
    SUDOERS_DIR.mkdir(mode=0o755, exist_ok=True)
    target = SUDOERS_DIR / name
    if target.exists() and target.read_text() == rule:
        return
    # sudo skips files in sudoers.d whose names contain a '.', so the check copy is never live;
    # a sudoers file that does not parse would break sudo for everyone.
    tmp = SUDOERS_DIR / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(rule)
    try:
        tmp.chmod(0o440)
        result = subprocess.run([str(VISUDO), "-cf", str(tmp)], capture_output=True, text=True, timeout=scaled(30))
        if result.returncode != 0:
            raise SshdError(f"visudo rejected the sudo rule for {name}: {result.stdout}{result.stderr}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# --- keys ----------------------------------------------------------------------------------------


def _keygen(path: Path, key_type: KeyType, passphrase: str, comment: str) -> None:
    if path.exists() or path.with_name(path.name + ".pub").exists():
        # ssh-keygen would ask whether to overwrite, and fail on the closed stdin.
        raise FileExistsError(f"{path} already exists")
    args = [str(SSH_KEYGEN), "-q", "-t", key_type, "-N", passphrase, "-C", comment, "-f", str(path)]
    if key_type in _KEY_BITS:
        args[4:4] = ["-b", _KEY_BITS[key_type]]
    result = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=scaled(60))
    if result.returncode != 0:
        raise SshdError(f"ssh-keygen -t {key_type} -f {path} exited {result.returncode}: {result.stderr.strip()}")


def make_client_key(
    path: Path, passphrase: str | None = None, *, key_type: KeyType = "ed25519", comment: str = "bridgehead-test"
) -> tuple[Path, str]:
    """A client key pair at ``path`` and ``path``.pub; returns (private key path, public key line).

    The private key is in OpenSSH's own format, encrypted (bcrypt KDF, aes256-ctr) when
    ``passphrase`` is given. Raises FileExistsError rather than overwrite a key.
    """
    _keygen(path, key_type, passphrase or "", comment)
    return path, path.with_name(path.name + ".pub").read_text().strip()


def fingerprint(public_line: str) -> str:
    """A public key line's SHA256 fingerprint as OpenSSH prints it: "SHA256:" and unpadded base64."""
    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


@functools.cache
def openssh_version() -> tuple[int, int]:
    """The installed sshd's (major, minor) version, e.g. (9, 2) on Debian 12."""
    result = subprocess.run([str(SSHD), "-V"], capture_output=True, text=True, timeout=scaled(30))
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", result.stdout + result.stderr)
    if match is None:
        raise SshdError(f"cannot tell the OpenSSH version from: {result.stderr.strip()}")
    return int(match[1]), int(match[2])


# --- the server ----------------------------------------------------------------------------------


class Sshd(ChildServer):
    """One sshd process with its own host keys, config and port under ``workdir``.

    The config (see ``config_lines``) allows the users in ``users`` in by password or by the keys
    given to ``add_authorized_key``, forwards TCP (for jump-host tests), accepts ``BH_*``
    environment variables and serves sftp. ``extra_config`` lines come first in the file, where
    sshd's first-value-wins rule lets them override the defaults (``"AllowTcpForwarding no"``);
    change ``extra_config`` and ``restart()`` to reconfigure.
    """

    host = "127.0.0.1"
    name = "sshd"
    error = SshdError

    def __init__(
        self,
        workdir: Path,
        *,
        users: Sequence[str] = (TEST_USER,),
        rsa: bool = False,
        extra_config: Sequence[str] = (),
    ) -> None:
        """Generate host keys (ed25519, plus RSA 3072 if ``rsa``) under ``workdir``; nothing runs yet."""
        missing = [str(p) for p in (SSHD, SSH_KEYGEN, CAT) if not p.exists()]
        if missing:
            raise SshdError(f"OpenSSH is not installed ({', '.join(missing)}): apt-get install openssh-server")
        if os.geteuid() != 0:
            raise SshdError("sshd must run as root to check passwords and switch to the test user")
        if NOLOGIN.exists():
            raise SshdError(f"{NOLOGIN} exists: sshd (UsePAM no) would refuse every login; remove it")
        workdir = workdir.resolve()
        # sshd_config splits values on whitespace, and AuthorizedKeysCommand expands %-tokens.
        if re.search(r'[\s"%#]', str(workdir)):
            raise ValueError(f"sshd_config cannot take the work directory {workdir!s} as is")
        self.workdir = workdir
        self.users = tuple(users)
        self.extra_config = list(extra_config)
        self.config_file = workdir / "sshd_config"
        self.log_file = workdir / "sshd.log"
        self.pid_file = workdir / "sshd.pid"
        self.keys_dir = workdir / "authorized_keys"
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        for user in self.users:
            # Present even when empty: keeps "AuthorizedKeysCommand failed" out of the log.
            (self.keys_dir / user).touch(mode=0o600)
        self.host_keys: dict[str, Path] = {}
        for key_type in ("ed25519", "rsa") if rsa else ("ed25519",):
            path = workdir / f"ssh_host_{key_type}_key"
            if not path.exists():  # a reused work directory keeps its identity
                _keygen(path, "rsa" if key_type == "rsa" else "ed25519", "", "bridgehead-test-host")
            self.host_keys[key_type] = path
        # Picked now so that addresses are known before start; start() picks another only if some
        # other process took this one in between.
        self.port = free_port()
        self._ports = {self.port}
        super().__init__()

    # -- identity --

    def host_public_line(self, key_type: str = "ed25519") -> str:
        """The host key's public line, ``ssh-ed25519 AAAA... comment``."""
        return self.host_keys[key_type].with_name(self.host_keys[key_type].name + ".pub").read_text().strip()

    def host_key_fingerprint(self, key_type: str = "ed25519") -> str:
        """As OpenSSH shows it: ``SHA256:`` and base64 without padding."""
        return fingerprint(self.host_public_line(key_type))

    def known_hosts_line(self, key_type: str = "ed25519") -> str:
        """``[127.0.0.1]:PORT ssh-ed25519 AAAA...``; OpenSSH writes the bare host only for port 22."""
        algo, blob = self.host_public_line(key_type).split()[:2]
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{name} {algo} {blob}"

    def write_known_hosts(self, path: Path) -> Path:
        """A known_hosts file with every host key of this server (the port is part of each line)."""
        path.write_text("".join(self.known_hosts_line(t) + "\n" for t in self.host_keys))
        return path

    # -- users --

    def add_authorized_key(self, user: str, public_key_line: str) -> None:
        """Let ``user`` log in with this key (a line as in authorized_keys, options allowed).

        Takes effect at once: sshd reads the file at every attempt.
        """
        if user not in self.users:
            raise ValueError(f"{user} is not in AllowUsers ({', '.join(self.users)})")
        with (self.keys_dir / user).open("a") as f:
            f.write(public_key_line.strip() + "\n")

    # -- config --

    def config_lines(self) -> list[str]:
        keys_file = self.keys_dir / "%u"
        lines = [
            *self.extra_config,
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            *(f"HostKey {path}" for path in self.host_keys.values()),
            f"PidFile {self.pid_file}",
            # sshd reads AuthorizedKeysFile as the logging-in user, who cannot enter pytest's
            # tmp_path (/tmp/pytest-of-root is 0700): "Could not open user 'bhtest' authorized
            # keys ...: Permission denied". The command runs as root and reads the same file.
            "AuthorizedKeysFile none",
            f"AuthorizedKeysCommand {CAT} {keys_file}",
            "AuthorizedKeysCommandUser root",
            "StrictModes no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication yes",
            "PermitEmptyPasswords no",
            "KbdInteractiveAuthentication no",
            # No PAM: sshd checks /etc/shadow itself. That needs root, refuses locked accounts even
            # for keys (see ensure_test_user) and honours /etc/nologin.
            "UsePAM no",
            "PermitRootLogin no",
            f"AllowUsers {' '.join(self.users)}",
            # Defaults are 10 sessions a connection and 10:30:100 unauthenticated connections
            # (dropped at random past 10), too few for concurrency tests.
            "MaxSessions 64",
            "MaxStartups 100:30:200",
            "AllowTcpForwarding yes",
            "PermitOpen any",
            "X11Forwarding no",
            "UseDNS no",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            "PrintMotd no",
            "PrintLastLog no",
            "AcceptEnv BH_*",
        ]
        if openssh_version() >= (9, 8):
            # From 9.8 sshd shuts out a source address after failed logins or crashes; every test
            # connects from 127.0.0.1, and wrong-password tests would lock out the rest.
            lines.append("PerSourcePenalties no")
        return lines

    def _write_config(self) -> None:
        self.config_file.write_text("\n".join(self.config_lines()) + "\n")

    # -- process --

    def argv(self) -> list[str]:
        # -D: stay in the foreground as our child; -e: log to stderr, i.e. the file. The log is
        # opened for appending, so the per-connection processes sshd re-executes, which write
        # to it too, never overwrite each other.
        return [str(SSHD), "-D", "-e", "-f", str(self.config_file)]

    def before_spawn(self) -> None:
        if not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
            PRIVSEP_DIR.chmod(0o755)  # mkdir's mode is filtered by the umask
        self._write_config()

    def pick_new_ports(self) -> None:
        self.port = free_port()
        self._ports.add(self.port)

    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def probe(self, offset: int) -> str:
        """'' once our sshd listens and sends its banner, else why not.

        The log line comes first: an SSH banner alone could come from another test's sshd that got
        the port while ours is failing to bind it.
        """
        if f"Server listening on {self.host} port {self.port}." not in self.log_tail(lines=1000, since=offset):
            return "no 'Server listening' in the log yet"
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                banner = sock.makefile("rb").readline(256)
        except OSError as exc:
            return repr(exc)
        return "" if banner.startswith(b"SSH-2.0-") else f"banner {banner!r}"

    def stop(self, timeout: float = 10) -> None:
        """Stop sshd and every session it started; idempotent.

        sshd's listener exits on SIGTERM but leaves its connections running (each in its own
        session, so not in our process group either), and with them the users' commands. So the
        listener is paused, its descendants killed, then the listener terminated and reaped; last,
        anything whose SSH_CONNECTION names this server (a background job that outlived its
        shell, reparented away) is killed too. Sessions are cut, as on a crash or a reboot.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGSTOP)  # no new connections while we collect the old
                freeze_and_kill(lambda: descendants(proc.pid))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                try:
                    proc.wait(timeout=scaled(timeout))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            ours = {(self.host, port) for port in self._ports}
            freeze_and_kill(lambda: {pid for pid in live_processes() if ssh_connection_to(pid) in ours})
