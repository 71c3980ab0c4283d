"""SFTP ``get`` and ``put`` on the host's warm transport, streamed and size-limited.

``get`` reads the file in chunks, one record each (``{"path", "offset", "data"}``, data in
base64), then ``{"path", "size", "sha256"}``; one chunk is read per record handed to the
stream, so a large file passes in bounded memory at the pace the control plane takes it.
``put`` writes ``content`` to a temporary name beside the path and renames it into place, so
the path holds the old file or the whole new one, never part of it; then it returns
``{"path", "size", "sha256"}``. Paths were checked against the profile's ``sftp_paths`` before
any connection (check_policy).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import posixpath
import uuid

import paramiko

from bridgehead.plugins.ssh.on_transport import OnTransport
from bridgehead.sdk import SourceError, SourceUnavailable

_CHUNK = 192 * 1024  # 256 KiB of base64 a record: well under max_record_bytes


class FileTransfer(OnTransport):
    @property
    def path(self) -> str:
        return self.params.path or ""

    async def run(self) -> None:
        channel = await self.pool.session(self.transport)
        try:
            # As SFTPClient.from_transport does, on the session the pool gives.
            await self._blocking(channel.invoke_subsystem, "sftp")
            sftp = await self._blocking(paramiko.SFTPClient, channel)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.executor.submit(channel.close)
            raise SourceUnavailable(f"opening SFTP: {exc}") from None
        try:
            if self.params.op == "get":
                await self._get(sftp)
            else:
                await self._put(sftp)
        except OSError as exc:
            raise _error(exc, self.path) from None
        finally:
            self.executor.submit(sftp.close)

    async def _get(self, sftp: paramiko.SFTPClient) -> None:
        ctx, path, limit = self.ctx, self.path, self.ctx.profile.max_file_bytes
        size = (await self._blocking(sftp.stat, path)).st_size or 0
        if size > limit:
            raise SourceError(f"{path} is {size:,} bytes, over max_file_bytes = {limit:,}", code="file_too_large")
        handle = await self._blocking(sftp.open, path, "rb")
        try:
            handle.prefetch(size)  # paramiko asks for the whole file ahead, in pipelined requests
            digest = hashlib.sha256()
            offset = 0
            while chunk := await self._blocking(handle.read, _CHUNK):
                offset += len(chunk)
                if offset > limit:  # it grew while read
                    raise SourceError(f"{path} grew past max_file_bytes = {limit:,}", code="file_too_large")
                digest.update(chunk)
                await ctx.emit({"path": path, "offset": offset - len(chunk), "data": base64.b64encode(chunk).decode()})
                ctx.progress(offset, size, f"{offset:,} of {size:,} bytes")
        finally:
            # Closed before the SFTP session is: a close-handle request sent after the
            # channel's close reaches a channel the server has freed, and OpenSSH drops the
            # whole connection for that ("data packet referred to nonexistent channel").
            with contextlib.suppress(Exception):
                await self._blocking(handle.close)
        await ctx.emit({"path": path, "size": offset, "sha256": digest.hexdigest()})

    async def _put(self, sftp: paramiko.SFTPClient) -> None:
        ctx, path = self.ctx, self.path
        content = self.params.content or b""
        temporary = posixpath.join(
            posixpath.dirname(path), f".{posixpath.basename(path)}.bridgehead-{uuid.uuid4().hex}"
        )

        def write() -> None:
            try:
                with sftp.open(temporary, "wb") as out:
                    out.set_pipelined(True)
                    for start in range(0, len(content), _CHUNK):
                        out.write(content[start : start + _CHUNK])
                sftp.posix_rename(temporary, path)
            except BaseException:
                try:
                    sftp.remove(temporary)
                except OSError:
                    pass
                raise

        with self.pool.writing():
            await self._blocking(write)
        await ctx.emit({"path": path, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()})


def _error(exc: OSError, path: str) -> SourceError:
    if exc.errno == errno.ENOENT or isinstance(exc, FileNotFoundError):
        return SourceError(f"{path}: no such file", code="no_such_file")
    if exc.errno == errno.EACCES or isinstance(exc, PermissionError):
        return SourceError(f"{path}: permission denied", code="access_denied")
    return SourceError(f"{path}: {exc}", code="sftp_error")
