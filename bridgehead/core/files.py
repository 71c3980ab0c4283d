"""Files only their owner may read: the data dirs of the agent and the control plane hold
keys, tokens and records, so folders are 0700, files 0600, and a write lands whole or not at
all (a crash leaves the old file or the new one, never half of each)."""

from __future__ import annotations

import os
from pathlib import Path


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask, and an existing dir keeps its own


def make_private_tree(path: Path) -> None:
    """The directory and everything in it 0700 (directories) / 0600 (files), whatever mode
    they were found with. Symbolic links are left alone (chmod would follow them out of the
    tree)."""
    ensure_private_dir(path)
    for root, dirs, files in os.walk(path):
        for name in dirs:
            entry = os.path.join(root, name)
            if not os.path.islink(entry):
                os.chmod(entry, 0o700)
        for name in files:
            entry = os.path.join(root, name)
            if not os.path.islink(entry):
                os.chmod(entry, 0o600)


def write_private(path: Path, data: bytes, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` (mode 0600) durably and atomically. ``exclusive``: only if
    ``path`` does not exist yet; returns False when another writer got there first (creation
    races, such as the CLI and a starting server both making the CA, are settled by
    ``os.link``: the first file to land wins and the loser reads it back)."""
    # The writer's pid in the temporary name: two processes writing the same file do not
    # truncate each other's half-written copy.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if not exclusive:
        os.replace(tmp, path)
        return True
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def fsync_dir(path: Path) -> None:
    """Make the names in ``path`` (a rename, a new or removed entry) durable."""
    if os.name == "nt":  # directories cannot be opened for fsync there; NTFS journals names
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600): a temporary file, fsync, rename, fsync of the
    directory. A crash, even a power cut, leaves the old file or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
