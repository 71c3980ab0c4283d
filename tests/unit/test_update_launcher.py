"""Unit tests of the launcher's decision (bridgehead/agent/update/launcher.py resolve): which
binary ``bridgehead-agent run`` becomes. Its exec and crash safety are in
tests/integration/test_update_crash_points.py."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bridgehead.agent.update.launcher import LAUNCHED_ENV, resolve
from bridgehead.agent.update.releases import Releases
from bridgehead.agent.update.signing import sign_release
from bridgehead.agent.update.staging import Download

KEY = Ed25519PrivateKey.generate()
BASE_VERSION = "0.1.0"


@pytest.fixture(autouse=True)
def not_launched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LAUNCHED_ENV, raising=False)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base-bridgehead-agent"
    path.write_text("#!/bin/sh\necho 'bridgehead-agent 0.1.0'\n")
    path.chmod(0o755)
    return path


def stage(data_dir: Path, version: str) -> Path:
    body = f"#!/bin/sh\necho 'bridgehead-agent {version}'\n".encode()
    sha = hashlib.sha256(body).hexdigest()
    d = Download(data_dir / "releases", version, len(body), sha, 1 << 20)
    d.write(0, body)
    return d.finish(sign_release(KEY, version, sha), KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def on_trial(data_dir: Path, version: str, deadline_s: float = 60) -> Releases:
    releases = Releases(data_dir)
    stage(data_dir, version)
    releases.begin_trial(version, deadline_s)
    return releases


def test_an_agent_never_updated_runs_itself(tmp_path: Path, base: Path) -> None:
    """No releases directory: nothing to launch, nothing created."""
    assert resolve(tmp_path / "data", BASE_VERSION, base) is None
    assert not (tmp_path / "data").exists()


def test_a_trial_gets_exactly_one_start(tmp_path: Path, base: Path) -> None:
    """First start: the release; second start without a commit: rolled back to the base."""
    releases = on_trial(tmp_path, "2.0.0")
    assert releases.binary("2.0.0") == resolve(tmp_path, BASE_VERSION, base)
    trial = releases.state().trial
    assert trial is not None and 1 == trial.starts
    assert resolve(tmp_path, BASE_VERSION, base) is None
    reason = releases.is_failed("2.0.0")
    assert reason is not None and "stopped before reporting healthy" in reason
    assert releases.state().trial is None


def test_a_trial_past_its_deadline_is_rolled_back_at_start(tmp_path: Path, base: Path) -> None:
    """A trial whose deadline passed (the machine was off) does not start."""
    releases = on_trial(tmp_path, "2.0.0", deadline_s=-1)
    assert resolve(tmp_path, BASE_VERSION, base) is None
    assert "deadline" in (releases.is_failed("2.0.0") or "")


def test_a_committed_release_is_launched_at_every_start(tmp_path: Path, base: Path) -> None:
    """After commit, every start of the base execs the release."""
    releases = on_trial(tmp_path, "2.0.0")
    releases.commit()
    for _ in range(3):
        assert releases.binary("2.0.0") == resolve(tmp_path, BASE_VERSION, base)


def test_a_launched_release_does_not_launch_again(tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BRIDGEHEAD_LAUNCHED set: resolve returns None without touching the state (no loop)."""
    releases = on_trial(tmp_path, "2.0.0")
    monkeypatch.setenv(LAUNCHED_ENV, "2.0.0")
    before = releases.state_path.read_bytes()
    assert resolve(tmp_path, "2.0.0", releases.binary("2.0.0")) is None
    assert before == releases.state_path.read_bytes()


def test_the_base_runs_itself_when_current_is_its_own_version(tmp_path: Path, base: Path) -> None:
    """A release of the base's own version is not exec'd (the package was upgraded to it)."""
    releases = on_trial(tmp_path, BASE_VERSION)
    releases.commit()
    assert resolve(tmp_path, BASE_VERSION, base) is None


def test_a_dangling_link_runs_the_base_with_a_warning(
    tmp_path: Path, base: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The committed release's binary vanished: the base runs."""
    releases = on_trial(tmp_path, "2.0.0")
    releases.commit()
    releases.binary("2.0.0").unlink()
    assert resolve(tmp_path, BASE_VERSION, base) is None
    assert "missing or not executable" in caplog.text


def test_a_release_that_is_not_executable_runs_the_base(tmp_path: Path, base: Path) -> None:
    """Lost its mode bits: not exec'd; on trial, it is rolled back at once."""
    releases = on_trial(tmp_path, "2.0.0")
    releases.binary("2.0.0").chmod(0o644)
    assert resolve(tmp_path, BASE_VERSION, base) is None
    assert "not executable" in (releases.is_failed("2.0.0") or "")


def test_a_corrupt_state_is_set_aside_and_the_base_runs(
    tmp_path: Path, base: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Unreadable state.json: moved aside, link removed, base runs; the next start is clean."""
    releases = on_trial(tmp_path, "2.0.0")
    releases.state_path.write_bytes(b"\x00garbage")
    assert resolve(tmp_path, BASE_VERSION, base) is None
    assert "corrupt" in caplog.text
    assert not os.path.lexists(releases.link)
    assert [] != list(releases.dir.glob("state.json.corrupt-*"))
    assert resolve(tmp_path, BASE_VERSION, base) is None


def test_a_link_that_names_no_release_runs_the_base(tmp_path: Path, base: Path) -> None:
    """A link we did not write (to /bin/sh, say) is never followed; it is removed."""
    releases = on_trial(tmp_path, "2.0.0")
    releases.commit()
    os.unlink(releases.link)
    os.symlink("/bin/sh", releases.link)
    assert releases.binary("2.0.0") == resolve(tmp_path, BASE_VERSION, base)
    assert "2.0.0/bridgehead-agent" == os.readlink(releases.link)
