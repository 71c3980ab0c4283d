"""A release's download: resumable across restarts, bounded, and verified before it can run.

Bytes land in ``releases/.partial/<version>``; its terms (size and hash) in
``.partial/<version>.json``, so a restart resumes only the very same artifact (a partial file
of other terms is discarded). ``finish`` checks size, signature and hash, and only then
publishes the file as ``releases/<version>/bridgehead-agent``; anything that fails the check is
deleted, so a tampered byte can never be resumed into a "complete" download.

The partial file is not fsynced per chunk: after a power loss it may be shorter than what
was acknowledged (the download resumes from what is on disk) or hold garbage past the last
fsync on some file systems, which the SHA-256 check at ``finish`` catches (the partial is then
deleted and the download starts again).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import msgspec

from bridgehead.agent.update.errors import UpdateRefused
from bridgehead.agent.update.layout import (
    BINARY_NAME,
    PARTIAL_DIR,
    RELEASE_INFO,
    check_version,
)
from bridgehead.agent.update.signing import release_message, verify_release
from bridgehead.core.crash_points import crash_point
from bridgehead.core.files import ensure_private_dir, fsync_dir, write_atomically

_HASH_CHUNK = 1 << 20


class ReleaseInfo(msgspec.Struct, frozen=True):
    """What was verified about a staged release; kept beside it so ``begin_trial`` can check the
    bytes are still those (disk corruption, a half-pruned directory)."""

    version: str
    size: int
    sha256: str
    signature: str  # hex


class _Terms(msgspec.Struct, frozen=True):
    size: int
    sha256: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Download:
    """One release being downloaded into ``releases_dir``; ``offset`` is where the next chunk
    goes (what is already on disk, so a restarted agent asks the control plane for the rest)."""

    def __init__(self, releases_dir: Path, version: str, size: int, sha256_hex: str, max_bytes: int) -> None:
        self.version = check_version(version)
        release_message(version, sha256_hex)  # validates the hash's form
        if not isinstance(size, int) or size <= 0:
            raise UpdateRefused(f"release {version}: size {size!r} is not a positive number of bytes")
        if size > max_bytes:
            raise UpdateRefused(f"release {version}: {size} bytes is over this agent's limit of {max_bytes}")
        self.size = size
        self.sha256 = sha256_hex
        self.max_bytes = max_bytes
        self.releases_dir = releases_dir
        self._partials = releases_dir / PARTIAL_DIR
        self.path = self._partials / self.version
        self._terms_path = self._partials / f"{self.version}.json"
        ensure_private_dir(self._partials)
        self.offset = self._resume()

    def _resume(self) -> int:
        terms = _Terms(size=self.size, sha256=self.sha256)
        try:
            known = msgspec.json.decode(self._terms_path.read_bytes(), type=_Terms)
        except (OSError, msgspec.DecodeError):
            known = None
        if known != terms:
            # Another artifact's bytes (or none): start over under these terms.
            self.path.unlink(missing_ok=True)
            write_atomically(self._terms_path, msgspec.json.encode(terms))
            return 0
        try:
            on_disk = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        if on_disk > self.size:
            self.path.unlink()
            return 0
        return on_disk

    def write(self, offset: int, data: bytes) -> None:
        """Append ``data``, which must start at ``offset`` (== ``self.offset``)."""
        if offset != self.offset:
            raise UpdateRefused(f"release {self.version}: chunk at offset {offset}, expected {self.offset}")
        end = offset + len(data)
        if end > self.size or end > self.max_bytes:
            raise UpdateRefused(
                f"release {self.version}: chunk ends at byte {end}, past the announced size {self.size}"
                + (f" or the limit {self.max_bytes}" if end > self.max_bytes else "")
            )
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)
        self.offset = end

    def discard(self) -> None:
        """Forget the download: the partial file and its terms."""
        self.path.unlink(missing_ok=True)
        self._terms_path.unlink(missing_ok=True)
        self.offset = 0

    def _refuse(self, message: str) -> UpdateRefused:
        self.discard()
        return UpdateRefused(message)

    def finish(self, signature: bytes, public_key: bytes) -> Path:
        """Verify the whole file and publish it; the path of the executable it became."""
        if self.offset != self.size:
            raise UpdateRefused(f"release {self.version}: {self.offset} of {self.size} bytes downloaded")
        try:
            verify_release(public_key, self.version, self.sha256, signature)
        except UpdateRefused as exc:
            raise self._refuse(str(exc)) from None
        actual = file_sha256(self.path)
        if actual != self.sha256:
            raise self._refuse(
                f"release {self.version}: the downloaded bytes hash to {actual}, not the signed {self.sha256}"
            )
        with open(self.path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(self.path, 0o755)  # noqa: S103 - an executable; data_dir (0700) keeps others out
        target_dir = self.releases_dir / self.version
        target_dir.mkdir(mode=0o755, exist_ok=True)
        fsync_dir(self.releases_dir)
        info = ReleaseInfo(version=self.version, size=self.size, sha256=self.sha256, signature=signature.hex())
        # The record first, the binary last: the binary's presence is what "staged" means.
        write_atomically(target_dir / RELEASE_INFO, msgspec.json.encode(info))
        crash_point("update.stage_before_publish")
        binary = target_dir / BINARY_NAME
        os.replace(self.path, binary)
        fsync_dir(target_dir)
        fsync_dir(self._partials)
        crash_point("update.stage_after_publish")
        self._terms_path.unlink(missing_ok=True)
        return binary


def read_release_info(release_dir: Path) -> ReleaseInfo | None:
    try:
        return msgspec.json.decode((release_dir / RELEASE_INFO).read_bytes(), type=ReleaseInfo)
    except (OSError, msgspec.DecodeError):
        return None
