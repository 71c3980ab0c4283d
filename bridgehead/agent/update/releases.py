"""The update state machine and the atomic swap of ``releases/current``.

    (base or committed C) --begin_trial(V)--> trial of V --commit()------> committed V
                                                         \\--rollback(why)--> C again, V failed

``state.json`` is the record, the ``current`` link is what the launcher executes. Each step
writes them in the order that makes every crash in between resolvable at the next start:

- begin_trial: state (trial recorded) first, then the link. Trial recorded but link still old:
  the trial never started, and the launcher rolls it back.
- commit: only the state (the link already points at the trial's version).
- rollback: the link back first, then the state. Link back but trial still recorded: the
  launcher rolls back again (idempotent). The state never says "rolled back" while the link
  still points at the failed version.

The base (the packaged binary) is never written and always runs: no link, a dangling one, or
a corrupt state all mean "run the base".
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from bridgehead.agent.update.errors import UpdateRefused, UpdateStateError
from bridgehead.agent.update.layout import (
    CURRENT_LINK,
    STATE_FILE,
    check_version,
    is_executable_file,
    is_valid_version,
    link_target,
    read_link,
    release_binary,
    releases_dir,
    remove_link,
    replace_symlink,
    version_of_target,
)
from bridgehead.agent.update.staging import file_sha256, read_release_info
from bridgehead.core.crash_points import crash_point
from bridgehead.core.files import fsync_dir, write_atomically

log = logging.getLogger("bridgehead.agent.update")

_TRASH_PREFIX = ".trash-"


class Trial(msgspec.Struct):
    """A release started on probation: it must commit before ``deadline`` (wall clock) and
    within its first start (``starts`` counts launches; a second one means the first died)."""

    version: str
    previous: str | None
    started_at: float
    deadline: float
    starts: int = 0


class UpdateState(msgspec.Struct):
    current: str | None = None  # the committed release; None: the base
    previous: str | None = None  # the release committed before it (kept on disk)
    trial: Trial | None = None
    failed: dict[str, str] = msgspec.field(default_factory=dict)  # version -> reason


def _check_state(state: UpdateState) -> UpdateState:
    names = [state.current, state.previous, *state.failed]
    if state.trial is not None:
        names += [state.trial.version, state.trial.previous]
    for name in names:
        if name is not None and not is_valid_version(name):
            raise ValueError(f"version {name!r} in the state is not a valid release version")
    return state


class Releases:
    """The releases of one agent's ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = releases_dir(data_dir)
        self.link = self.dir / CURRENT_LINK
        self.state_path = self.dir / STATE_FILE

    # -- reading ---------------------------------------------------------------------------

    def state(self) -> UpdateState:
        """The recorded state (empty if none); UpdateStateError if state.json is unreadable."""
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            return UpdateState()
        except OSError as exc:
            raise UpdateStateError(f"{self.state_path}: cannot read: {exc.strerror}") from None
        try:
            return _check_state(msgspec.json.decode(raw, type=UpdateState))
        except (msgspec.DecodeError, ValueError) as exc:
            raise UpdateStateError(f"{self.state_path}: corrupt: {exc}") from None

    def binary(self, version: str) -> Path:
        return release_binary(self.dir, version)

    def linked_version(self) -> str | None:
        """The version ``current`` names (None: no link, or not one of ours)."""
        target = read_link(self.link)
        return None if target is None else version_of_target(target)

    def is_failed(self, version: str) -> str | None:
        """Why ``version`` failed here before, or None: the caller must not start it again."""
        return self.state().failed.get(version)

    # -- steps -----------------------------------------------------------------------------

    def begin_trial(self, version: str, deadline_s: float) -> None:
        """Record a trial of the staged ``version`` and point ``current`` at it; the caller then
        restarts the agent (through the launcher)."""
        check_version(version)
        with self._locked():
            state = self.state()
            if state.trial is not None:
                raise UpdateStateError(f"a trial of release {state.trial.version} is already under way")
            if version == state.current:
                raise UpdateStateError(f"release {version} is already the current one")
            if reason := state.failed.get(version):
                raise UpdateRefused(f"release {version} failed on this agent before ({reason}); not starting it again")
            self._check_staged(version)
            now = time.time()
            state.trial = Trial(
                version=version, previous=state.current, started_at=now, deadline=now + deadline_s, starts=0
            )
            self._save(state)
            crash_point("update.after_state_trial")
            replace_symlink(self.link, link_target(version))
            crash_point("update.after_link_swap")
        log.info("release %s on trial (deadline %.0f s); previous: %s", version, deadline_s, state.current or "base")

    def record_start(self) -> Trial | None:
        """The launcher's count of the trial's starts (persisted before the release runs)."""
        with self._locked():
            state = self.state()
            if state.trial is None:
                return None
            state.trial.starts += 1
            self._save(state)
            return state.trial

    def commit(self) -> None:
        """The trial's release is healthy: it becomes current, its predecessor previous."""
        with self._locked():
            state = self.state()
            trial = state.trial
            if trial is None:
                raise UpdateStateError("no release is on trial; nothing to commit")
            if self.linked_version() != trial.version:
                raise UpdateStateError(f"release {trial.version} is on trial but `current` does not point at it")
            retired = state.previous
            state.previous, state.current, state.trial = state.current, trial.version, None
            self._save(state)
            crash_point("update.after_commit_state")
            self._prune(state, retired)
        log.info("release %s committed; previous: %s", trial.version, state.previous or "base")

    def rollback(self, reason: str) -> None:
        """Point ``current`` back at the trial's predecessor (or remove it: the base) and record
        the trial's release as failed. Without a trial only the link is made to match the
        state (so a second call, or one after a crash, is harmless)."""
        with self._locked():
            state = self.state()
            trial = state.trial
            if trial is None:
                self._repair_link(state)
                return
            self._point_link_at(trial.previous)
            crash_point("update.rollback_after_link")
            state.failed[trial.version] = reason
            state.current, state.trial = trial.previous, None
            self._save(state)
            crash_point("update.rollback_after_state")
            self._prune(state, trial.version)
        log.warning("release %s rolled back to %s: %s", trial.version, trial.previous or "base", reason)

    def abandon_trial(self, reason: str) -> None:
        """End a trial whose release never started (the swap was cut short before the link
        moved): the link is made to match the state and the release is *not* marked failed,
        since it never ran; it is staged still and may be tried again when offered again."""
        with self._locked():
            state = self.state()
            trial = state.trial
            if trial is None:
                return
            state.trial = None
            self._save(state)
            self._repair_link(state)
        log.warning("trial of release %s abandoned before it started: %s", trial.version, reason)

    def mark_failed(self, version: str, reason: str) -> None:
        """Record that ``version`` must not be started here again (say its trial could not
        begin): the next offer of it is refused rather than downloaded and begun in a loop."""
        with self._locked():
            state = self.state()
            state.failed[check_version(version)] = reason
            self._save(state)

    def clear_failed(self, version: str) -> None:
        """Allow a failed version again (an admin's decision, never automatic)."""
        with self._locked():
            state = self.state()
            if state.failed.pop(version, None) is not None:
                self._save(state)

    def repair_link(self) -> None:
        """Outside a trial, make ``current`` point at the committed release (or be absent), and
        finish deleting what a crash left half-pruned. Checked without the lock first: the
        usual start writes nothing (and works on a data_dir mounted read-only)."""
        state = self.state()
        wanted = None if state.current is None else link_target(state.current)
        if state.trial is not None or (read_link(self.link) == wanted and not self._trash()):
            return
        with self._locked():
            state = self.state()
            if state.trial is None:
                self._repair_link(state)
            self._empty_trash()

    def set_aside_corrupt_state(self) -> Path | None:
        """Move an unreadable state.json out of the way (kept for diagnosis) and remove the
        link, whose meaning is lost with it: the base runs. The new name, or None."""
        with self._locked():
            try:
                self.state()
                return None
            except UpdateStateError:
                pass
            aside = self.state_path.with_name(f"{STATE_FILE}.corrupt-{int(time.time())}")
            try:
                os.replace(self.state_path, aside)
            except FileNotFoundError:
                return None
            remove_link(self.link)
            fsync_dir(self.dir)
            return aside

    # -- internals -------------------------------------------------------------------------

    def _check_staged(self, version: str) -> None:
        binary = self.binary(version)
        if not is_executable_file(binary):
            raise UpdateStateError(f"release {version} is not staged ({binary} is missing or not executable)")
        info = read_release_info(binary.parent)
        if info is None or info.version != version:
            raise UpdateStateError(f"release {version} has no valid release record beside {binary}; stage it again")
        # Verified when staged; checked again because it may have sat on disk since.
        if file_sha256(binary) != info.sha256:
            raise UpdateRefused(f"release {version}: {binary} no longer matches its verified hash; stage it again")

    def _point_link_at(self, version: str | None) -> None:
        if version is None:
            remove_link(self.link)
        else:
            replace_symlink(self.link, link_target(version))

    def _repair_link(self, state: UpdateState) -> None:
        wanted = None if state.current is None else link_target(state.current)
        if read_link(self.link) != wanted:
            log.warning("`current` did not match the update state; pointing it at %s", state.current or "base")
            self._point_link_at(state.current)

    def _save(self, state: UpdateState) -> None:
        write_atomically(self.state_path, msgspec.json.encode(state))

    def _prune(self, state: UpdateState, retired: str | None) -> None:
        """Delete the release just pushed out (or just failed) and any failed one still on disk;
        never current, previous, a trial, or a release staged and not yet tried. Each goes by
        a rename first, so a crash mid-delete leaves a hidden ``.trash-`` directory (removed
        next time), never a half-deleted release under its own name."""
        keep = {state.current, state.previous, state.trial.version if state.trial else None}
        doomed = ({retired} | set(state.failed)) - keep
        self._empty_trash()
        for name in sorted(v for v in doomed if v is not None):
            release = self.dir / name
            if not release.is_dir() or release.is_symlink():
                continue
            trash = self.dir / f"{_TRASH_PREFIX}{name}"
            os.replace(release, trash)
            fsync_dir(self.dir)
            crash_point("update.prune_after_trash")
            shutil.rmtree(trash, ignore_errors=True)

    def _trash(self) -> list[Path]:
        """Half-pruned releases, and temporary files or links a crash left before their rename."""
        return [
            entry
            for entry in self.dir.iterdir()
            if entry.name.startswith(_TRASH_PREFIX) or (entry.name.startswith(".") and entry.name.endswith(".tmp"))
        ]

    def _empty_trash(self) -> None:
        for entry in self._trash():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (the launcher and a running agent's updater of the same
        data_dir). POSIX only: a Windows agent relies on there being one process."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.name == "nt":
            yield
            return
        import fcntl

        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
