"""data_dir: there, the running user's, private, writable, with room for the spool.

The agent keeps its key, its journal and the spool of records the control plane has not
taken yet in data_dir (up to ``limits.spool_max_bytes``). A data_dir others can write to lets
them replace the agent's identity or journal, so that is a failure, not a warning.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from bridgehead.agent.doctor.findings import Finding, fail, ok, warn
from bridgehead.agent.doctor.identity_check import POSIX_MODES

MiB = 1024 * 1024
# Below this the journal itself may not be able to commit: the agent stops taking jobs.
MIN_FREE_BYTES = 100 * MiB


def _user(uid: int) -> str:
    try:
        import pwd  # POSIX only

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def check_data_dir(data_dir: Path, spool_max_bytes: int) -> Finding:
    """Blocking (file system): run it in a thread."""
    try:
        info = data_dir.stat()
    except FileNotFoundError:
        return fail(f"{data_dir} does not exist", "enrolling creates it; or create it (mode 0700) for the agent's user")
    except OSError as exc:
        return fail(f"cannot look at {data_dir}: {exc.strerror}", "give the agent's user access to the data_dir")
    if not stat.S_ISDIR(info.st_mode):
        return fail(f"{data_dir} is not a directory", "point agent.data_dir at a directory")
    if POSIX_MODES and info.st_uid != os.geteuid():
        return fail(
            f"{data_dir} belongs to {_user(info.st_uid)}, not to {_user(os.geteuid())} who runs this",
            "run doctor as the agent's user (sudo -u USER bridgehead-agent doctor ...), "
            f"or give that user the directory (chown -R USER {data_dir})",
        )
    mode = stat.S_IMODE(info.st_mode)
    if POSIX_MODES and mode & 0o022:
        return fail(
            f"{data_dir} has mode {mode:04o}: other users can write to it (and replace the agent's identity)",
            f"chmod 700 {data_dir}",
        )
    try:
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        return fail(f"cannot write in {data_dir}: {exc.strerror}", "make the data_dir writable by the agent's user")
    free = shutil.disk_usage(data_dir).free
    room = f"{free / MiB:,.0f} MiB free"
    if free < MIN_FREE_BYTES:
        return fail(
            f"{data_dir}: only {room}", f"free space on that file system (at least {MIN_FREE_BYTES // MiB} MiB)"
        )
    if free < spool_max_bytes:
        return warn(
            f"{data_dir}: {room}, less than limits.spool_max_bytes ({spool_max_bytes / MiB:,.0f} MiB)",
            "free space, or lower limits.spool_max_bytes: a long outage of the control plane could fill the disk",
        )
    if POSIX_MODES and mode & 0o077:
        return warn(f"{data_dir} has mode {mode:04o}: other users can list it; {room}", f"chmod 700 {data_dir}")
    return ok(f"{data_dir}: owned by {_user(info.st_uid)}, mode {mode:04o}, {room}")
