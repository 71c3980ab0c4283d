"""Where releases live under the agent's ``data_dir``, and the few durable file operations the
update is built from.

    releases/
      <version>/bridgehead-agent     a verified executable (0755)
      <version>/release.json         its size, SHA-256 and signature (written before the binary)
      .partial/<version>             a download in progress, .partial/<version>.json its terms
      current -> <version>/bridgehead-agent   absent or broken: run the packaged ("base") binary
      state.json                     the update state (trial, committed, failed versions)

Ordering for power loss: a file's data is fsynced before the rename that publishes it, and the
directory is fsynced after the rename, so after a power cut the name shows the old file or the
complete new one, never a torn one (ext4/xfs semantics; the rename itself is atomic).
"""

from __future__ import annotations

import os
from pathlib import Path

from bridgehead.agent.update.errors import UpdateRefused
from bridgehead.core.files import fsync_dir
from bridgehead.protocol.release_signing import ReleaseSignatureError, check_release_version, is_release_version

RELEASES_DIR = "releases"
BINARY_NAME = "bridgehead-agent"
RELEASE_INFO = "release.json"
PARTIAL_DIR = ".partial"
CURRENT_LINK = "current"
STATE_FILE = "state.json"


def check_version(version: str) -> str:
    """``version`` if it is a safe release version (it becomes a path component and a link
    target: ``bridgehead.protocol.release_signing``'s rule), else UpdateRefused."""
    try:
        return check_release_version(version)
    except ReleaseSignatureError as exc:
        raise UpdateRefused(str(exc)) from None


def is_valid_version(name: str) -> bool:
    return is_release_version(name)


def releases_dir(data_dir: Path) -> Path:
    return data_dir / RELEASES_DIR


def release_binary(releases: Path, version: str) -> Path:
    return releases / check_version(version) / BINARY_NAME


def link_target(version: str) -> str:
    """What ``current`` holds: relative, so the data_dir can move."""
    return f"{check_version(version)}/{BINARY_NAME}"


def version_of_target(target: str) -> str | None:
    """The version a ``current`` link target names, or None if it is not one we write."""
    version, sep, name = target.partition("/")
    if not sep or name != BINARY_NAME or not is_valid_version(version):
        return None
    return version


def replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` in one rename(2): readers see the old target or the new one,
    never a missing link."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(link.parent)


def remove_link(link: Path) -> None:
    """Remove ``link`` (absent already is fine) durably."""
    try:
        os.unlink(link)
    except FileNotFoundError:
        return
    fsync_dir(link.parent)


def read_link(link: Path) -> str | None:
    """The target ``link`` holds, or None if there is no link."""
    try:
        return os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError:  # EINVAL: a regular file sits there; treated as no link by the callers
        return None


def is_executable_file(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)
