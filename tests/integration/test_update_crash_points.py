"""Killing the agent at every step of a self-update leaves a binary that starts.

Each step of the swap, commit, rollback, staging and launcher runs in a real child process
with ``BRIDGEHEAD_CRASH_AT`` set, which SIGKILLs itself at that point (no cleanup, as with
``kill -9`` or a power cut after the last fsync). Then the launcher runs in a fresh process,
as the service manager's next start would, and what it picks (a release, or the packaged
"base") must answer ``--version``; the state must be consistent, and a second start (the
first one died without committing) must settle on a release that runs.

Releases are stand-ins: small shell scripts, downloaded and verified like real binaries.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from bridgehead_testing.harness import agent_command, scaled
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import bridgehead.agent.update as update_package
from bridgehead.agent.update.launcher import LAUNCHED_ENV
from bridgehead.agent.update.releases import Releases
from bridgehead.agent.update.signing import sign_release
from bridgehead.agent.update.staging import Download

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
BASE_VERSION = "0.1.0"
NEW = "2.0.0"

# A fresh start of the agent as the service manager would make it: the launcher decides.
START = """
import json, sys
from pathlib import Path
import bridgehead.agent.update as update_package
from bridgehead.agent.update.launcher import resolve
path = resolve(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
print(json.dumps(None if path is None else str(path)))
"""

# One update step, run where it may be killed.
STEP = """
import sys
from pathlib import Path
from bridgehead.agent.update.releases import Releases
from bridgehead.agent.update.staging import Download
data_dir, step = Path(sys.argv[1]), sys.argv[2]
if step == "begin_trial":
    Releases(data_dir).begin_trial("2.0.0", 600)
elif step == "commit":
    Releases(data_dir).commit()
elif step == "rollback":
    Releases(data_dir).rollback("test rollback")
elif step == "stage":
    body, signature, public = (bytes.fromhex(a) for a in sys.argv[3:6])
    import hashlib
    d = Download(data_dir / "releases", "3.0.0", len(body), hashlib.sha256(body).hexdigest(), 1 << 20)
    d.write(d.offset, body[d.offset:])
    d.finish(signature, public)
print("step completed", flush=True)
"""


def script(version: str) -> bytes:
    return f"#!/bin/sh\necho 'bridgehead-agent {version}'\n".encode()


def stage(data_dir: Path, version: str) -> Path:
    body = script(version)
    sha = hashlib.sha256(body).hexdigest()
    d = Download(data_dir / "releases", version, len(body), sha, 1 << 20)
    d.write(d.offset, body[d.offset :])
    return d.finish(sign_release(KEY, version, sha), PUBLIC)


def child_env(crash_at: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BRIDGEHEAD_CRASH_AT", LAUNCHED_ENV)}
    if crash_at:
        env["BRIDGEHEAD_CRASH_AT"] = crash_at
    return env


def run_step(data_dir: Path, step: str, crash_at: str) -> None:
    """The step in a child that must die at ``crash_at`` (proof the point is on the path)."""
    args = [sys.executable, "-c", STEP, str(data_dir), step]
    if step == "stage":
        body = script("3.0.0")
        signature = sign_release(KEY, "3.0.0", hashlib.sha256(body).hexdigest())
        args += [body.hex(), signature.hex(), PUBLIC.hex()]
    done = subprocess.run(args, env=child_env(crash_at), capture_output=True, text=True, timeout=scaled(30))
    assert -signal.SIGKILL == done.returncode, f"{step} did not die at {crash_at}: {done.returncode} {done.stderr}"
    assert f"crash point {crash_at}" in done.stderr


def start(data_dir: Path, base: Path, crash_at: str | None = None) -> str:
    """Start the agent: the launcher in a fresh process picks a binary, which must answer
    --version; the version that runs."""
    done = subprocess.run(
        [sys.executable, "-c", START, str(data_dir), BASE_VERSION, str(base)],
        env=child_env(crash_at),
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    if crash_at:
        assert -signal.SIGKILL == done.returncode, f"the launcher did not die at {crash_at}: {done.stderr}"
        return ""
    assert 0 == done.returncode, done.stderr
    chosen = json.loads(done.stdout)
    binary = Path(chosen) if chosen else base
    ran = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=scaled(30))
    assert 0 == ran.returncode, f"{binary} --version: {ran.returncode} {ran.stderr}"
    version = binary.parent.name if chosen else BASE_VERSION
    assert f"bridgehead-agent {version}" == ran.stdout.strip()
    return version


def assert_consistent(data_dir: Path) -> None:
    """After a start: the state is readable, the link names what the state says, and every
    release it names runs."""
    releases = Releases(data_dir)
    state = releases.state()
    if state.trial is not None:
        assert state.trial.version == releases.linked_version()
    else:
        assert state.current == releases.linked_version()
    for version in (state.current, state.previous, state.trial.version if state.trial else None):
        if version is not None:
            assert os.access(releases.binary(version), os.X_OK), f"{version} is named but cannot run"
    assert state.current not in state.failed
    assert [] == [p.name for p in releases.dir.iterdir() if p.name.startswith(".trash-")]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """The packaged binary: never written by an update, always runnable."""
    path = tmp_path / "usr-bin" / "bridgehead-agent"
    path.parent.mkdir()
    path.write_bytes(script(BASE_VERSION))
    path.chmod(0o555)
    return path


def from_base(data_dir: Path) -> str:
    """No release committed yet (the base runs); 2.0.0 staged. The version rolled back to."""
    stage(data_dir, NEW)
    return BASE_VERSION


def from_release(data_dir: Path) -> str:
    """0.9.0 then 1.0.0 committed (1.0.0 current, 0.9.0 previous); 2.0.0 staged."""
    releases = Releases(data_dir)
    for version in ("0.9.0", "1.0.0"):
        stage(data_dir, version)
        releases.begin_trial(version, 600)
        releases.commit()
    stage(data_dir, NEW)
    return "1.0.0"


def trial(data_dir: Path) -> None:
    Releases(data_dir).begin_trial(NEW, 600)


def trial_started(data_dir: Path, base: Path) -> None:
    """The trial had its first start (the release is running, not yet healthy)."""
    trial(data_dir)
    assert NEW == start(data_dir, base)


OLD = "old"  # the version the setup rolls back to
SETUPS: dict[str, Callable[[Path], str]] = {"from-base": from_base, "from-release": from_release}

# (step, crash point, what runs at the first start after the crash, at the second, NEW failed)
CASES = [
    # begin_trial: state first, then the link.
    ("begin_trial", "update.after_state_trial", OLD, OLD, False),  # never ran: not to blame
    ("begin_trial", "update.after_link_swap", NEW, OLD, True),
    # commit, from a trial that had its start: only the state, then the prune.
    ("commit", "update.after_commit_state", NEW, NEW, False),
    ("commit", "update.prune_after_trash", NEW, NEW, False),
    # rollback of a started trial: the link first, then the state, then the prune.
    ("rollback", "update.rollback_after_link", OLD, OLD, True),
    ("rollback", "update.rollback_after_state", OLD, OLD, True),
    ("rollback", "update.prune_after_trash", OLD, OLD, True),
    # the launcher: counting the trial's start, and the rollback at the second start.
    ("first-start", "update.launcher_after_start_count", OLD, OLD, True),
    ("second-start", "update.rollback_after_link", OLD, OLD, True),
    ("second-start", "update.rollback_after_state", OLD, OLD, True),
    # staging another release while 2.0.0 waits: nothing that runs is touched.
    ("stage", "update.stage_before_publish", OLD, OLD, False),
    ("stage", "update.stage_after_publish", OLD, OLD, False),
]


@pytest.mark.parametrize("setup", sorted(SETUPS))
@pytest.mark.parametrize(
    ("step", "point", "first", "second", "failed"), CASES, ids=[f"{c[0]}@{c[1].split('.', 1)[1]}" for c in CASES]
)
def test_a_crash_at_each_step_leaves_a_binary_that_starts(
    tmp_path: Path, base: Path, setup: str, step: str, point: str, first: str, second: str, failed: bool
) -> None:
    """Kill at the point, start twice (the first start's process never commits): each start
    runs a working binary, the expected one, from a consistent state."""
    if setup == "from-base" and point == "update.prune_after_trash" and step == "commit":
        point = "update.after_commit_state"  # from the base a commit retires nothing: no prune to kill
    data_dir = tmp_path / "data"
    old = SETUPS[setup](data_dir)
    expected = {OLD: old, NEW: NEW}
    if step in ("commit", "rollback", "second-start"):
        trial_started(data_dir, base)
    elif step == "first-start":
        trial(data_dir)

    if step in ("first-start", "second-start"):
        start(data_dir, base, crash_at=point)
    else:
        run_step(data_dir, step, point)

    assert expected[first] == start(data_dir, base)
    assert_consistent(data_dir)
    assert expected[second] == start(data_dir, base)
    assert_consistent(data_dir)
    assert failed == (Releases(data_dir).is_failed(NEW) is not None)
    if step == "stage":  # the interrupted download completes when tried again
        assert (data_dir / "releases" / "3.0.0" / "bridgehead-agent") == stage(data_dir, "3.0.0")


def test_every_crash_point_of_the_update_is_covered() -> None:
    """A crash point added to the update code without a case here fails this test."""
    source = "".join(p.read_text() for p in Path(update_package.__file__).parent.glob("*.py"))
    in_code = set(re.findall(r'crash_point\("([^"]+)"\)', source))
    assert in_code == {point for _, point, *_ in CASES}


def agent_script(version: str, log: Path) -> bytes:
    """A stand-in release that runs this checkout's agent under another version number,
    logging each invocation (the variables the launcher set, then its arguments)."""
    return (
        "#!/bin/sh\n"
        f'echo "$BRIDGEHEAD_LAUNCHED $PYINSTALLER_RESET_ENVIRONMENT $*" >> {log}\n'
        f"export BRIDGEHEAD_VERSION_OVERRIDE={version}\n"
        f'exec {sys.executable} -m bridgehead.agent.cli "$@"\n'
    ).encode()


def test_run_execs_the_trial_release_once_and_the_next_start_rolls_it_back(tmp_path: Path) -> None:
    """`bridgehead-agent run` becomes the release on trial (with its arguments, once: the
    release does not launch again); when that start ends without a commit, the next `run`
    rolls back and runs itself."""
    data_dir, log, config = tmp_path / "data", tmp_path / "invocations.log", tmp_path / "agent.toml"
    config.write_text(f'[agent]\nname = "a"\ndata_dir = "{data_dir}"\n\n[control]\nurl = "https://127.0.0.1:9"\n')
    body = agent_script(NEW, log)
    sha = hashlib.sha256(body).hexdigest()
    download = Download(data_dir / "releases", NEW, len(body), sha, 1 << 20)
    download.write(0, body)
    download.finish(sign_release(KEY, NEW, sha), PUBLIC)
    releases = Releases(data_dir)
    releases.begin_trial(NEW, 600)
    run = [*agent_command(), "run", "--config", str(config)]  # the built binary with BRIDGEHEAD_AGENT_BIN

    # Not enrolled: whichever binary runs stops at the identity check, after the launcher.
    first = subprocess.run(run, env=child_env(), capture_output=True, text=True, timeout=scaled(30))
    assert 0 != first.returncode and "holds no identity" in first.stderr
    assert [f"{NEW} 1 run --config {config}"] == log.read_text().splitlines()
    state = releases.state()
    assert state.trial is not None and 1 == state.trial.starts

    second = subprocess.run(run, env=child_env(), capture_output=True, text=True, timeout=scaled(30))
    assert "holds no identity" in second.stderr
    assert "rolled back to base" in second.stderr
    assert 1 == len(log.read_text().splitlines())
    assert "stopped before reporting healthy" in (releases.is_failed(NEW) or "")


def test_a_release_reports_the_version_it_claims(tmp_path: Path) -> None:
    """BRIDGEHEAD_VERSION_OVERRIDE (test-only) is what a stand-in release reports as its version."""
    body = agent_script("9.9.9", tmp_path / "log")
    path = tmp_path / "release"
    path.write_bytes(body)
    path.chmod(0o755)
    done = subprocess.run([path, "--version"], env=child_env(), capture_output=True, text=True, timeout=scaled(30))
    assert "bridgehead-agent 9.9.9" == done.stdout.strip()


LAUNCH = """
import sys
from pathlib import Path
from bridgehead.agent.update.launcher import launch
launch(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), ["--version"])
print("running the base in-process", flush=True)
"""


def test_a_release_that_cannot_be_executed_is_rolled_back_and_the_base_runs(tmp_path: Path, base: Path) -> None:
    """A signed file the kernel will not execute (no ELF header, no #!): exec fails, the
    trial is rolled back with the reason, and the launcher returns to run the base."""
    data_dir = tmp_path / "data"
    body = b"\x00\x01 not a program\n"
    sha = hashlib.sha256(body).hexdigest()
    download = Download(data_dir / "releases", NEW, len(body), sha, 1 << 20)
    download.write(0, body)
    download.finish(sign_release(KEY, NEW, sha), PUBLIC)
    Releases(data_dir).begin_trial(NEW, 600)
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH, str(data_dir), BASE_VERSION, str(base)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert 0 == done.returncode, done.stderr
    assert "running the base in-process" == done.stdout.strip()
    assert "cannot execute" in (Releases(data_dir).is_failed(NEW) or "")
    assert Releases(data_dir).linked_version() is None
