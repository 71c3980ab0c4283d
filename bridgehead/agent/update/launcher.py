"""What ``bridgehead-agent run`` executes before anything else: the current release, or itself.

The packaged binary (the "base") is what the service manager starts. It looks at
``releases/``: settles a trial that has already had its chance (a second start without a
commit, or a passed deadline, rolls it back), then ``execve``\\ s the release ``current``
points at. The process is replaced in place, so the service manager goes on supervising it
(with the one-file binary the main PID is PyInstaller's bootloader, which forwards signals;
the unit's NotifyAccess=all lets the release notify). The release runs with
``BRIDGEHEAD_LAUNCHED`` set and does not launch again: no loop. Anything it cannot make sense
of (an unreadable state, a dangling link, a file that is not executable) means "run the
base", with a warning: the agent is never left without a binary that starts.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from bridgehead.agent.update.errors import UpdateError, UpdateStateError
from bridgehead.agent.update.layout import is_executable_file, read_link
from bridgehead.agent.update.releases import Releases, Trial
from bridgehead.core.crash_points import crash_point

log = logging.getLogger("bridgehead.agent.update")

LAUNCHED_ENV = "BRIDGEHEAD_LAUNCHED"  # the version a launcher exec'd; set: do not launch again
BASE_COMMAND_ENV = "BRIDGEHEAD_BASE_COMMAND"  # JSON argv prefix that starts the base again


def resolve(data_dir: Path, own_version: str, own_path: Path) -> Path | None:
    """The release to exec instead of running in this process, or None to run here."""
    if os.environ.get(LAUNCHED_ENV):
        return None
    releases = Releases(data_dir)
    if not releases.dir.is_dir():  # never updated: the common case costs one stat
        return None
    try:
        return _resolve(releases, own_version, own_path)
    except UpdateStateError as exc:
        aside = _set_aside(releases)
        log.warning("%s; running the packaged binary%s", exc, f" (state moved to {aside})" if aside else "")
        return None
    except (OSError, UpdateError) as exc:
        log.warning("cannot apply the release state in %s (%s); running the packaged binary", releases.dir, exc)
        return None


def _set_aside(releases: Releases) -> Path | None:
    try:
        return releases.set_aside_corrupt_state()
    except OSError as exc:
        log.warning("cannot move the corrupt update state aside: %s", exc)
        return None


def _resolve(releases: Releases, own_version: str, own_path: Path) -> Path | None:
    if releases.state().trial is not None:
        trial = releases.record_start()
        crash_point("update.launcher_after_start_count")
        if trial is not None and trial.starts == 1 and releases.linked_version() != trial.version:
            # Cut short inside begin_trial, before the link moved (this is the trial's first
            # start, so the release never ran): it is not to blame, and the control plane's
            # next offer tries it again. A link moved back by a rollback cut short is the
            # other case: that release did run (starts > 1), and the rollback is finished.
            releases.abandon_trial("the update was interrupted before the release first started")
        elif trial is not None and (reason := _trial_failure(releases, trial)):
            releases.rollback(reason)
    else:
        releases.repair_link()
    version = releases.linked_version()
    if version is None:
        if (target := read_link(releases.link)) is not None:
            log.warning("%s points at %r, not a release; running the packaged binary", releases.link, target)
        return None
    if version == own_version:
        return None
    path = releases.binary(version)
    if not is_executable_file(path):
        log.warning("release %s: %s is missing or not executable; running the packaged binary", version, path)
        return None
    if own_path.exists() and path.samefile(own_path):
        return None
    return path


def _trial_failure(releases: Releases, trial: Trial) -> str | None:
    """Why the trial must end now, or None if this start is its one chance."""
    if releases.linked_version() != trial.version:
        return "its rollback was interrupted"
    if trial.starts > 1:
        return "it stopped before reporting healthy (crashed, hung or was killed)"
    if time.time() > trial.deadline:
        return "it did not report healthy before the trial's deadline"
    if not is_executable_file(releases.binary(trial.version)):
        return "its binary is missing or not executable"
    return None


def own_command() -> list[str]:
    """The argv prefix that starts this program again: the frozen binary, or the module."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "bridgehead.agent.cli"]


def exec_release(path: Path, argv: list[str]) -> None:
    """Replace this process with the release at ``path``, given ``argv`` (the arguments after
    the program's name). Returns only by raising OSError (exec failed)."""
    env = _exec_env()
    env[LAUNCHED_ENV] = path.parent.name
    env.setdefault(BASE_COMMAND_ENV, json.dumps(own_command()))
    _flush()
    os.execve(path, [str(path), *argv], env)  # noqa: S606 - a verified release, no shell


def relaunch_base(argv: list[str]) -> None:
    """Replace this process with the base (which launches whatever ``current`` now names):
    what a release does after rolling itself back."""
    env = _exec_env()
    command = _base_command(env.pop(BASE_COMMAND_ENV, ""))
    env.pop(LAUNCHED_ENV, None)
    _flush()
    os.execve(command[0], [*command, *argv], env)  # noqa: S606 - our own program, no shell


def _exec_env() -> dict[str, str]:
    env = dict(os.environ)
    # A PyInstaller one-file binary exec'd by another must unpack and run its own archive,
    # never take over the unpacked files (the code) of the one that exec'd it (PyInstaller
    # >= 6.10; 6.x also compares _PYI_ARCHIVE_FILE with its own path, this makes it explicit).
    env["PYINSTALLER_RESET_ENVIRONMENT"] = "1"
    return env


def _base_command(recorded: str) -> list[str]:
    try:
        command = json.loads(recorded)
    except ValueError:
        return own_command()
    if isinstance(command, list) and command and all(isinstance(c, str) for c in command):
        return command
    return own_command()


def launch(data_dir: Path, own_version: str, own_path: Path, argv: list[str]) -> None:
    """``resolve`` then ``exec_release``; returns when this process should run the agent
    itself (nothing to launch, or the release could not be executed: rolled back if on trial)."""
    path = resolve(data_dir, own_version, own_path)
    if path is None:
        return
    log.info("starting release %s", path.parent.name)
    try:
        exec_release(path, argv)
    except OSError as exc:
        reason = f"cannot execute {path}: {exc.strerror or exc}"
        log.warning("%s; running the packaged binary", reason)
        try:
            Releases(data_dir).rollback(reason)
        except (OSError, UpdateError) as again:
            log.warning("cannot roll back: %s", again)


def _flush() -> None:
    # exec discards what Python buffers: a log line or print about to go out would be lost.
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
