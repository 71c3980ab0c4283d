"""Unit tests of the update state machine and the swap of ``releases/current``
(bridgehead/agent/update/releases.py, trial.py)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bridgehead.agent.update.errors import UpdateRefused, UpdateStateError
from bridgehead.agent.update.releases import Releases
from bridgehead.agent.update.signing import sign_release
from bridgehead.agent.update.staging import Download
from bridgehead.agent.update.trial import TrialGuard

KEY = Ed25519PrivateKey.generate()


def stage(data_dir: Path, version: str) -> Path:
    """Download and verify a stand-in release (a script answering --version)."""
    body = f"#!/bin/sh\necho 'bridgehead-agent {version}'\n".encode()
    sha = hashlib.sha256(body).hexdigest()
    d = Download(data_dir / "releases", version, len(body), sha, 1 << 20)
    d.write(0, body)
    return d.finish(sign_release(KEY, version, sha), KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def linked(releases: Releases) -> str | None:
    return os.readlink(releases.link) if os.path.lexists(releases.link) else None


def update(releases: Releases, data_dir: Path, version: str) -> None:
    stage(data_dir, version)
    releases.begin_trial(version, 60)
    releases.commit()


def test_a_trial_points_current_at_the_release_and_records_the_previous(tmp_path: Path) -> None:
    """begin_trial: trial recorded (previous = the committed one), link swapped, not yet committed."""
    releases = Releases(tmp_path)
    stage(tmp_path, "2.0.0")
    releases.begin_trial("2.0.0", 60)
    state = releases.state()
    assert state.trial is not None
    assert ("2.0.0", None, 0) == (state.trial.version, state.trial.previous, state.trial.starts)
    assert 59 < state.trial.deadline - state.trial.started_at <= 60
    assert (None, None) == (state.current, state.previous)
    assert "2.0.0/bridgehead-agent" == linked(releases)


def test_commit_makes_the_trial_current_and_its_predecessor_previous(tmp_path: Path) -> None:
    """Two updates in a row: current and previous follow."""
    releases = Releases(tmp_path)
    update(releases, tmp_path, "1.0.0")
    update(releases, tmp_path, "2.0.0")
    state = releases.state()
    assert ("2.0.0", "1.0.0", None) == (state.current, state.previous, state.trial)
    assert "2.0.0/bridgehead-agent" == linked(releases)


def test_commit_prunes_every_release_but_current_and_previous(tmp_path: Path) -> None:
    """Old releases are deleted; partial downloads are left alone."""
    releases = Releases(tmp_path)
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        update(releases, tmp_path, version)
    Download(tmp_path / "releases", "3.0.0", 10, "0" * 64, 100).write(0, b"abc")
    names = sorted(p.name for p in (tmp_path / "releases").iterdir() if not p.name.startswith("."))
    assert ["1.1.0", "2.0.0", "current", "state.json"] == names
    assert (tmp_path / "releases" / ".partial" / "3.0.0").exists()


def test_rollback_to_a_release_restores_its_link_and_records_the_failure(tmp_path: Path) -> None:
    """The failed version is remembered with its reason, and its files are pruned."""
    releases = Releases(tmp_path)
    update(releases, tmp_path, "1.0.0")
    stage(tmp_path, "2.0.0")
    releases.begin_trial("2.0.0", 60)
    releases.rollback("no welcome within 60 s")
    state = releases.state()
    assert ("1.0.0", None, None) == (state.current, state.previous, state.trial)
    assert {"2.0.0": "no welcome within 60 s"} == state.failed
    assert "1.0.0/bridgehead-agent" == linked(releases)
    assert "no welcome within 60 s" == releases.is_failed("2.0.0")
    assert not (tmp_path / "releases" / "2.0.0").exists()


def test_rollback_to_the_base_removes_the_link(tmp_path: Path) -> None:
    """No previous release: the packaged binary runs again."""
    releases = Releases(tmp_path)
    stage(tmp_path, "2.0.0")
    releases.begin_trial("2.0.0", 60)
    releases.rollback("crashed")
    assert linked(releases) is None
    assert releases.state().current is None


def test_rollback_is_idempotent(tmp_path: Path) -> None:
    """A second rollback (a retry after a crash) changes nothing and keeps the first reason."""
    releases = Releases(tmp_path)
    update(releases, tmp_path, "1.0.0")
    stage(tmp_path, "2.0.0")
    releases.begin_trial("2.0.0", 60)
    releases.rollback("first")
    before = (releases.state_path.read_bytes(), linked(releases))
    releases.rollback("second")
    assert before == (releases.state_path.read_bytes(), linked(releases))


def test_rollback_without_a_trial_makes_the_link_match_the_state(tmp_path: Path) -> None:
    """A link left pointing at the wrong release (a crash mid-rollback) is repaired."""
    releases = Releases(tmp_path)
    update(releases, tmp_path, "1.0.0")
    os.unlink(releases.link)
    os.symlink("2.0.0/bridgehead-agent", releases.link)
    releases.rollback("again")
    assert "1.0.0/bridgehead-agent" == linked(releases)


def test_a_failed_version_is_not_tried_again_until_an_admin_clears_it(tmp_path: Path) -> None:
    """No retry loop: begin_trial refuses a failed version; clear_failed allows it again."""
    releases = Releases(tmp_path)
    stage(tmp_path, "2.0.0")
    releases.begin_trial("2.0.0", 60)
    releases.rollback("crashed")
    stage(tmp_path, "2.0.0")
    with pytest.raises(UpdateRefused, match=r"failed on this agent before \(crashed\)"):
        releases.begin_trial("2.0.0", 60)
    releases.clear_failed("2.0.0")
    releases.begin_trial("2.0.0", 60)
    assert releases.is_failed("2.0.0") is None


def test_a_release_that_is_not_staged_cannot_be_tried(tmp_path: Path) -> None:
    """begin_trial needs the verified binary; nothing changes otherwise."""
    releases = Releases(tmp_path)
    with pytest.raises(UpdateStateError, match="not staged"):
        releases.begin_trial("2.0.0", 60)
    assert releases.state().trial is None
    assert linked(releases) is None


def test_a_staged_binary_changed_on_disk_is_refused(tmp_path: Path) -> None:
    """The hash is checked again at the swap: bytes changed since staging never run."""
    releases = Releases(tmp_path)
    binary = stage(tmp_path, "2.0.0")
    binary.write_bytes(binary.read_bytes() + b"# appended\n")
    with pytest.raises(UpdateRefused, match="no longer matches its verified hash"):
        releases.begin_trial("2.0.0", 60)
    assert linked(releases) is None


def test_one_trial_at_a_time_and_no_commit_without_one(tmp_path: Path) -> None:
    """begin_trial during a trial and commit outside one are state errors."""
    releases = Releases(tmp_path)
    with pytest.raises(UpdateStateError, match="nothing to commit"):
        releases.commit()
    stage(tmp_path, "2.0.0")
    stage(tmp_path, "3.0.0")
    releases.begin_trial("2.0.0", 60)
    with pytest.raises(UpdateStateError, match="already under way"):
        releases.begin_trial("3.0.0", 60)


def test_the_current_release_is_not_tried_again(tmp_path: Path) -> None:
    """Updating to the version already committed is refused."""
    releases = Releases(tmp_path)
    update(releases, tmp_path, "1.0.0")
    with pytest.raises(UpdateStateError, match="already the current one"):
        releases.begin_trial("1.0.0", 60)


def test_an_unreadable_state_is_an_error_and_can_be_set_aside(tmp_path: Path) -> None:
    """Garbage in state.json is reported; set_aside keeps it for diagnosis and removes the link."""
    releases = Releases(tmp_path)
    update(releases, tmp_path, "1.0.0")
    releases.state_path.write_bytes(b'{"current": "../../etc"}')
    with pytest.raises(UpdateStateError, match="corrupt"):
        releases.state()
    aside = releases.set_aside_corrupt_state()
    assert aside is not None and aside.exists()
    assert linked(releases) is None
    assert releases.state().current is None


def test_the_trial_guard_commits_only_the_release_on_trial(tmp_path: Path) -> None:
    """healthy() in another version (the base, an old release) does nothing; in the trial's it commits."""
    releases = Releases(tmp_path)
    stage(tmp_path, "2.0.0")
    releases.begin_trial("2.0.0", 60)
    assert not TrialGuard(releases, "0.1.0").healthy()
    guard = TrialGuard(releases, "2.0.0")
    left = guard.seconds_left()
    assert left is not None and 0 < left <= 60
    assert guard.healthy()
    assert "2.0.0" == releases.state().current
    assert not guard.healthy()  # committed: no longer on trial


def test_the_trial_guard_rolls_back_only_once_the_deadline_passed(tmp_path: Path) -> None:
    """deadline_passed() before the deadline is a no-op; after it, a rollback with the reason."""
    releases = Releases(tmp_path)
    stage(tmp_path, "2.0.0")
    releases.begin_trial("2.0.0", 60)
    assert not TrialGuard(releases, "2.0.0").deadline_passed()
    stage(tmp_path, "3.0.0")
    releases.rollback("test")
    releases.begin_trial("3.0.0", -1)
    assert TrialGuard(releases, "3.0.0").deadline_passed()
    reason = releases.is_failed("3.0.0")
    assert reason is not None and "did not report healthy" in reason
    assert linked(releases) is None


def test_a_staged_release_not_yet_tried_survives_commits_and_rollbacks(tmp_path: Path) -> None:
    """Pruning removes what was pushed out or failed, never a download waiting for its trial."""
    releases = Releases(tmp_path)
    stage(tmp_path, "3.0.0")
    update(releases, tmp_path, "1.0.0")
    stage(tmp_path, "2.0.0")
    releases.begin_trial("2.0.0", 60)
    releases.rollback("crashed")
    assert (tmp_path / "releases" / "3.0.0" / "bridgehead-agent").exists()
    releases.begin_trial("3.0.0", 60)


def test_leftovers_of_a_crash_are_swept_at_the_next_start(tmp_path: Path) -> None:
    """A half-deleted release and temporaries a crash left before their rename go; nothing else."""
    releases = Releases(tmp_path)
    update(releases, tmp_path, "1.0.0")
    (releases.dir / ".trash-0.9.0").mkdir()
    (releases.dir / ".trash-0.9.0" / "bridgehead-agent").write_text("old")
    os.symlink("1.0.0/bridgehead-agent", releases.dir / ".current.4242.tmp")
    (releases.dir / ".state.json.4242.tmp").write_text("{")
    releases.repair_link()
    assert ["1.0.0", "current", "state.json"] == sorted(
        p.name for p in releases.dir.iterdir() if p.name not in (".lock", ".partial")
    )
    assert "1.0.0/bridgehead-agent" == linked(releases)
