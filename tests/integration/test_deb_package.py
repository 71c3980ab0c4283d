"""The agent's .deb and install.sh, for real: built by scripts/build-deb from the built binary,
installed with install.sh in a throwaway root (an overlay of this machine's / in a private
mount namespace: bridgehead_testing.throwaway_root), the agent started as the packaged unit
says and run against a control plane on loopback, then purged without a trace.

No systemd runs here (it is not PID 1), so the unit's ExecStart is run the way systemd would:
its User, Group, UMask, NoNewPrivileges and environment, read from the installed unit file.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from bridgehead_testing.harness import (
    ROOT,
    ControlPlane,
    agent_binary,
    free_port,
    scaled,
    terminate,
    wait_connected,
)
from bridgehead_testing.pki import make_ca
from bridgehead_testing.throwaway_root import ThrowawayRoot
from cryptography.hazmat.primitives import serialization

from bridgehead import __version__

# The throwaway root is an overlay whose lower layer is this machine's live /; overlayfs leaves
# changes to a lower layer under a mounted overlay undefined, and other test files change /
# (users, /var/lib): in a parallel run this file once saw libc.so.6 "Permission denied" there.
# So it runs alone, after the others.
pytestmark = pytest.mark.alone


BUILD_DEB = ROOT / "scripts" / "build-deb"
INSTALL_SH = ROOT / "packaging" / "install.sh"
UNIT_PATH = "/lib/systemd/system/bridgehead-agent.service"
CONFIG = "/etc/bridgehead-agent/agent.toml"
DATA_DIR = "/var/lib/bridgehead-agent"
AGENT = "deb-agent"


def built_binary() -> Path:
    """The binary scripts/build-agent made: what the package ships and this test runs."""
    named = agent_binary()
    binary = (ROOT / named) if named else ROOT / "dist" / "bridgehead-agent"
    if not binary.is_file():
        pytest.fail(f"no agent binary at {binary}: run scripts/build-agent first (or set BRIDGEHEAD_AGENT_BIN)")
    return binary


def build_deb(binary: Path, out: Path) -> Path:
    result = subprocess.run(
        [str(BUILD_DEB), "--binary", str(binary), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    assert result.returncode == 0, result.stderr
    (deb,) = out.glob("bridgehead-agent_*.deb")
    return deb


def unit_service_section(text: str) -> dict[str, list[str]]:
    """The [Service] keys of a systemd unit, each with its values in order (keys may repeat)."""
    keys: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line:
            key, value = line.split("=", 1)
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def as_the_unit_runs_it(root: ThrowawayRoot, unit_text: str) -> tuple[list[str], int]:
    """The unit's ExecStart as systemd would start it: the command inside the root, and its umask."""
    service = unit_service_section(unit_text)
    (exec_start,) = service["ExecStart"]
    argv = shlex.split(exec_start.lstrip("-@:+!"))
    user = service["User"][-1]
    group = service.get("Group", [user])[-1]
    home = root.run("getent", "passwd", user).stdout.split(":")[5]
    # What systemd puts in a system service's environment, then the unit's own.
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", f"USER={user}", f"LOGNAME={user}", f"HOME={home}"]
    env += [pair for value in service.get("Environment", []) for pair in shlex.split(value)]
    for value in service.get("EnvironmentFile", []):
        path = value.removeprefix("-")
        if root.path(path).is_file():
            env += [ln for ln in root.path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        else:
            assert value.startswith("-"), f"the unit needs {path}, which the package does not make"
    no_new_privs = ["--no-new-privs"] if service.get("NoNewPrivileges", ["no"])[-1] == "yes" else []
    command = ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", *no_new_privs, "env", "-i", *env]
    return [*command, *argv], int(service.get("UMask", ["0022"])[-1], 8)


def ids(pid: int) -> dict[str, list[int]]:
    """Uid and Gid (real, effective, saved, filesystem) of a process, and its NoNewPrivs."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: [int(v) for v in fields[key].split()] for key in ("Uid", "Gid", "NoNewPrivs")}


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the one-file binary is a bootloader and the agent, its child)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid] + [p for child in children for p in process_tree(int(child))]


def stat(root: ThrowawayRoot, path: str) -> str:
    return root.run("stat", "-c", "%a %U %G %F", path).stdout.strip()


def other_ca_pem() -> bytes:
    _, cert = make_ca("Not the control plane")
    return cert.public_bytes(serialization.Encoding.PEM)


def test_deb_installs_with_install_sh_runs_as_bridgehead_and_purges(tmp_path: Path, control: ControlPlane) -> None:
    """install.sh installs the .deb, configures and enrols; the packaged unit runs the agent as
    bridgehead; a second install.sh changes nothing; dpkg --purge leaves no trace."""
    binary = built_binary()
    deb = build_deb(binary, tmp_path / "deb")
    unit_source = (ROOT / "packaging" / "systemd" / "bridgehead-agent.service").read_bytes()
    with ThrowawayRoot(tmp_path / "root") as root:
        root.put("/tmp/in/bridgehead-agent.deb", deb.read_bytes())
        root.put("/tmp/in/install.sh", INSTALL_SH.read_bytes(), 0o755)
        root.put("/tmp/in/token", (control.enrollment_token() + "\n").encode(), 0o600)
        root.put("/tmp/in/control-ca.pem", control.ca_pem())
        root.put("/tmp/in/other-ca.pem", other_ca_pem())
        install = ["/tmp/in/install.sh", "--deb", "/tmp/in/bridgehead-agent.deb", "--token-file", "/tmp/in/token"]
        install += ["--name", AGENT, "--control-url"]  # the URL last
        assert root.run("getent", "passwd", "bridgehead", check=False).returncode == 2, "the root is not fresh"
        # man-db's index is not under test, and its trigger costs seconds per dpkg run (the
        # package has a manual page): off in this root, as CI images have it.
        root.run("rm", "-f", "/var/lib/man-db/auto-update")

        # Bad arguments: one line, exit 2, nothing installed.
        bad = root.run("/tmp/in/install.sh", "--deb", "/tmp/in/bridgehead-agent.deb", check=False)
        assert (bad.returncode, bad.stderr) == (2, bad.stderr.splitlines()[0] + "\n")
        assert "--control-url is required" in bad.stderr
        assert root.run("dpkg-query", "-W", "bridgehead-agent", check=False).returncode != 0

        # A CA file that is not the one the token pins: refused before anything changes (exit 3).
        wrong = root.run(*install, control.url, "--ca-file", "/tmp/in/other-ca.pem", check=False)
        assert (wrong.returncode, wrong.stdout) == (3, ""), wrong.stdout + wrong.stderr
        assert "the token pins" in wrong.stderr and len(wrong.stderr.splitlines()) == 1
        assert root.run("dpkg-query", "-W", "bridgehead-agent", check=False).returncode != 0

        # An enrolment that fails (nothing listens at that URL): exit 3 and one line, with the
        # package in and the token unspent.
        refused = root.run(*install, f"https://127.0.0.1:{free_port()}", check=False)
        assert refused.returncode == 3 and "enrolment failed" in refused.stderr, refused.stdout + refused.stderr
        assert len(refused.stderr.splitlines()) == 1 and "installing bridgehead-agent" in refused.stdout

        # With the right URL: the config written for the failed enrolment is written again.
        first = root.run(*install, control.url, "--ca-file", "/tmp/in/control-ca.pem")
        for step in ("is installed already", "writing /etc/bridgehead-agent/agent.toml", "enrolling as bridgehead"):
            assert step in first.stdout, first.stdout
        assert "systemd is not running here" in first.stdout and "done:" in first.stdout

        user = root.run("getent", "passwd", "bridgehead").stdout.strip().split(":")
        assert user[5:] == [DATA_DIR, "/usr/sbin/nologin"]
        uid, gid = int(user[2]), int(user[3])
        assert 0 < uid < 1000, "a system user"
        assert root.run("getent", "group", "bridgehead").stdout.split(":")[2] == str(gid)
        assert stat(root, "/usr/bin/bridgehead-agent") == "755 root root regular file"
        assert stat(root, UNIT_PATH) == "644 root root regular file"
        assert stat(root, CONFIG) == "640 root bridgehead regular file"
        assert stat(root, DATA_DIR) == "700 bridgehead bridgehead directory"
        assert stat(root, f"{DATA_DIR}/identity.json").endswith("bridgehead bridgehead regular file")
        assert root.path(UNIT_PATH).read_bytes() == unit_source, "the unit is shipped as it is"
        assert root.path("/usr/bin/bridgehead-agent").read_bytes() == binary.read_bytes()
        conffiles = root.run("dpkg-query", "-W", "-f=${Conffiles}", "bridgehead-agent").stdout.split()
        assert conffiles[0] == CONFIG, conffiles
        config = root.path(CONFIG).read_text()
        assert f'name = "{AGENT}"' in config and f'url = "{control.url}"' in config
        assert hashlib.md5(config.encode()).hexdigest() != conffiles[1], "install.sh replaced the sample"  # noqa: S324
        # deb-systemd-helper enabled the unit (symlinks only: no systemd runs here).
        wants = "/etc/systemd/system/multi-user.target.wants/bridgehead-agent.service"
        assert root.run("readlink", wants).stdout.strip() == UNIT_PATH

        # The agent, started as the installed unit starts it, connects and runs a job as bridgehead.
        command, umask = as_the_unit_runs_it(root, root.path(UNIT_PATH).read_text())
        log_path = tmp_path / "agent.log"
        with open(log_path, "wb") as log:
            proc = root.popen(*command, stdout=log, umask=umask)
        try:
            wait_connected(control.api(), [AGENT], timeout=30)
            for pid in process_tree(proc.pid):
                status = ids(pid)
                assert status["Uid"] == [uid] * 4 and status["Gid"] == [gid] * 4, (pid, status)
                assert status["NoNewPrivs"] == [1]
            api = control.api()
            job = api.wait_done(api.submit("echo", {"count": 3})["id"], timeout=30)
            assert (job["state"], job["agent"], job["record_count"]) == ("succeeded", AGENT, 3), job
        finally:
            code = terminate(proc, 30)
        assert code == 0, log_path.read_text()

        # Again: nothing changes, and it says so.
        before = {p: root.path(p).read_bytes() for p in (CONFIG, f"{DATA_DIR}/identity.json", "/etc/passwd")}
        second = root.run(*install, control.url, "--ca-file", "/tmp/in/control-ca.pem")
        assert "nothing to do" in second.stdout, second.stdout
        assert {p: root.path(p).read_bytes() for p in before} == before

        root.run("dpkg", "--purge", "bridgehead-agent")
        assert root.run("getent", "passwd", "bridgehead", check=False).returncode == 2
        assert root.run("getent", "group", "bridgehead", check=False).returncode == 2
        for gone in (DATA_DIR, "/etc/bridgehead-agent", UNIT_PATH, "/usr/bin/bridgehead-agent", wants):
            assert not os.path.lexists(root.path(gone)), f"{gone} is left after purge"
        assert root.run("dpkg-query", "-W", "bridgehead-agent", check=False).returncode != 0


def test_install_sh_without_a_package_places_the_binary_and_the_unit(tmp_path: Path, control: ControlPlane) -> None:
    """``install.sh --binary`` (a machine without dpkg's package): the binary, the user, the
    config, the enrolment and the agent's own unit (``service install``); a second run changes nothing."""
    binary = built_binary()
    with ThrowawayRoot(tmp_path / "root") as root:
        root.put("/tmp/in/bridgehead-agent", binary.read_bytes(), 0o755)
        root.put("/tmp/in/install.sh", INSTALL_SH.read_bytes(), 0o755)
        token = control.enrollment_token()
        install = ["/tmp/in/install.sh", "--binary", "/tmp/in/bridgehead-agent", "--token", "-"]
        install += ["--control-url", control.url, "--name", "bin-agent", "--cluster", "default"]
        first = root.run(*install, input=token + "\n")
        assert "installing /usr/bin/bridgehead-agent" in first.stdout and "done:" in first.stdout, first.stdout
        assert root.run("getent", "passwd", "bridgehead").stdout.strip().split(":")[5:] == [
            DATA_DIR,
            "/usr/sbin/nologin",
        ]
        assert stat(root, "/usr/bin/bridgehead-agent") == "755 root root regular file"
        assert stat(root, CONFIG) == "640 root bridgehead regular file"
        assert stat(root, f"{DATA_DIR}/identity.json").endswith("bridgehead bridgehead regular file")
        unit = unit_service_section(root.path("/etc/systemd/system/bridgehead-agent.service").read_text())
        assert unit["ExecStart"] == [f"/usr/bin/bridgehead-agent run --config {CONFIG}"]
        assert unit["User"] == ["bridgehead"]

        second = root.run(*install, input="")
        assert "nothing to do" in second.stdout, second.stdout


def fake_binary(directory: Path, version: str) -> Path:
    """A stand-in that only answers --version and --help: what build-deb asks of the binary.
    (Packaging the real one is the tests above; these check the script's own rules, quickly.)"""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "bridgehead-agent"
    path.write_text(
        f'#!/bin/sh\n[ "$1" = --help ] && echo "usage: bridgehead-agent"\necho "bridgehead-agent {version}"\n'
    )
    path.chmod(0o755)
    return path


def test_build_deb_is_reproducible(tmp_path: Path) -> None:
    """The same binary and sources at the same SOURCE_DATE_EPOCH give the same bytes."""
    binary = fake_binary(tmp_path / "bin", __version__)
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    debs = []
    for out in ("a", "b"):
        subprocess.run(
            [str(BUILD_DEB), "--binary", str(binary), "--out", str(tmp_path / out)],
            check=True,
            capture_output=True,
            env=env,
            timeout=scaled(60),
        )
        (deb,) = (tmp_path / out).glob("*.deb")
        debs.append(deb.read_bytes())
    assert debs[0] == debs[1]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "run scripts/build-agent first"),
        ("stale", "rebuild it with scripts/build-agent"),
        ("bad-argument", "unknown argument '--bogus'"),
    ],
)
def test_build_deb_refuses_with_one_line(tmp_path: Path, case: str, message: str) -> None:
    """No binary, a binary of another version, an unknown argument: exit 2 and one line."""
    argv = [str(BUILD_DEB), "--out", str(tmp_path / "out")]
    if case == "missing":
        argv += ["--binary", str(tmp_path / "nowhere" / "bridgehead-agent")]
    elif case == "stale":
        argv += ["--binary", str(fake_binary(tmp_path / "bin", "0.0.0-old"))]
    else:
        argv += ["--binary", str(fake_binary(tmp_path / "bin", __version__)), "--bogus"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(60))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "out").exists()
