"""The bytes of agent releases, as files in the control plane's data dir::

    releases/<version>.bin      an uploaded release (0600), named by its version for good
    releases/.incoming/         uploads in progress (a random name each), renamed when accepted

An upload streams into ``.incoming/`` while it is hashed and counted (never held in memory,
refused past its limit); only once the caller has checked it (its signature) is it fsynced
and renamed to its version's name, so a reader finds a complete file or none. Versions are
checked against the protocol's ``ReleaseVersion`` before they become part of a path.

Errors::

    BridgeheadError, ValueError
    └── ReleaseFileError        (code: a stable string for the API)
        ├── InvalidVersion      not a release version (could name another path)  invalid_version
        ├── ReleaseTooLarge     the upload passed its limit (nothing kept)         too_large
        └── ReleaseMissing      no file for the version, or a range past its end   release_missing
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from bridgehead.core.errors import BridgeheadError
from bridgehead.core.files import ensure_private_dir
from bridgehead.protocol.messages import MAX_RELEASE_CHUNK, ReleaseVersion

RELEASES_DIR = "releases"
INCOMING_DIR = ".incoming"
SUFFIX = ".bin"
# Uploads cut off by a crash leave their temporary file; one this old is nobody's any more.
STALE_INCOMING_S = 24 * 3600.0


class ReleaseFileError(BridgeheadError, ValueError):
    """Also a ValueError: a caller that reads files may catch (OSError, ValueError) alone."""

    code = "release_file"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidVersion(ReleaseFileError):
    code = "invalid_version"


class ReleaseTooLarge(ReleaseFileError):
    code = "too_large"


class ReleaseMissing(ReleaseFileError):
    code = "release_missing"


def check_version(version: str) -> str:
    """``version`` if it is a release version (the protocol's ``ReleaseVersion``, and no ".."
    which agents refuse as a path), else ``InvalidVersion``."""
    try:
        msgspec.convert(version, ReleaseVersion)
    except msgspec.ValidationError:
        valid = False
    else:
        valid = ".." not in version
    if not valid:
        raise InvalidVersion(
            f"release version {version!r} is not valid: 1-64 letters, digits, '.', '+', '_' and '-', "
            "starting with a letter or digit, without '..'"
        )
    return version


@dataclass(frozen=True)
class Received:
    """An upload on disk, not yet a release: ``commit`` makes it one, ``discard`` drops it."""

    tmp_path: Path
    size: int
    sha256: str  # lowercase hex


class ReleaseFiles:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / RELEASES_DIR
        self.incoming = self.dir / INCOMING_DIR

    def path(self, version: str) -> Path:
        return self.dir / f"{check_version(version)}{SUFFIX}"

    async def receive(self, chunks: AsyncIterator[bytes], max_bytes: int) -> Received:
        """Stream ``chunks`` into a temporary file, hashing them; ``ReleaseTooLarge`` (and
        nothing kept) once they pass ``max_bytes``, and nothing kept if they fail."""
        ensure_private_dir(self.dir)
        ensure_private_dir(self.incoming)
        self._sweep_incoming()
        tmp = self.incoming / f"{secrets.token_hex(8)}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            # Plain writes on the loop: each chunk lands in the page cache in microseconds;
            # the one slow call (fsync) is ``commit``'s, which callers run in a thread.
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise ReleaseTooLarge(f"the release is over the {max_bytes}-byte limit")
                    digest.update(chunk)
                    f.write(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return Received(tmp, size, digest.hexdigest())

    def commit(self, received: Received, version: str) -> Path:
        """Make ``received`` the file of ``version``: its data flushed to disk, then renamed, then
        the directory flushed, so after a power cut the name holds all of it or is absent.
        Blocking (fsync): call it in a worker thread from the event loop."""
        target = self.path(version)
        with open(received.tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(received.tmp_path, target)
        _fsync_dir(self.dir)
        return target

    def discard(self, received: Received) -> None:
        received.tmp_path.unlink(missing_ok=True)

    def read(self, version: str, offset: int, length: int) -> bytes:
        """Up to ``length`` (at most ``MAX_RELEASE_CHUNK``) bytes of ``version`` from ``offset``:
        fewer at the end of the file, none at its very end; ``ReleaseMissing`` for no file or an
        offset past its end."""
        if not 0 < length <= MAX_RELEASE_CHUNK or offset < 0:
            raise ValueError(f"a read is 1 to {MAX_RELEASE_CHUNK} bytes from an offset >= 0, not {length} at {offset}")
        path = self.path(version)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, after the size check
        except FileNotFoundError:
            raise ReleaseMissing(f"release {version}: no file {path} (was the data dir's releases/ changed?)") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if offset > size:
                raise ReleaseMissing(f"release {version}: offset {offset} is past its end ({size} bytes)")
            f.seek(offset)
            return f.read(length)

    def _sweep_incoming(self) -> None:
        cutoff = time.time() - STALE_INCOMING_S
        for entry in self.incoming.glob("*.part"):
            try:
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
            except FileNotFoundError:
                continue


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
