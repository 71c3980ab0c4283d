"""``Command``: one command on a warm SSH transport, its output streamed as records (the
flow is described in plugins/ssh/plugin.py). Imported with the first ssh job: it needs
paramiko, which an idle agent does not load."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import shlex
import threading
from typing import Any

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message

from agent.errors import SourceError, SourceUnavailable
from agent.sdk import JobContext
from plugins.ssh.on_transport import OnTransport
from plugins.ssh.output import CommandOutput
from plugins.ssh.params import SshParams, SshProfile

_READ_BYTES = 64 * 1024
_POLL_S = 0.05
_AHEAD = 8  # chunks read ahead of the record stream, per command
_KILL_AFTER_S = 2.0


class Command(OnTransport):
    def __init__(
        self,
        ctx: JobContext[SshProfile],
        params: SshParams,
        transport: paramiko.Transport,
        executor: concurrent.futures.Executor,
        output: type[CommandOutput] = CommandOutput,
    ) -> None:
        super().__init__(ctx, params, transport, executor)
        self.channel: paramiko.Channel | None = None
        profile = ctx.profile
        self.output = output(ctx, profile.inline_output_bytes, profile.max_output_bytes)

    async def run(self) -> None:
        params, profile = self.params, self.ctx.profile
        limit = min(params.timeout_s or profile.timeout_s, profile.timeout_s)
        writer: asyncio.Future[None] | None = None
        try:
            async with asyncio.timeout(limit):
                # Opening the session, starting the command and (with nothing to write) closing
                # its stdin in one thread hop: a hop costs ~0.3 ms of a warm command's ~5 ms.
                channel = await self._blocking(self._open_and_start, profile.connect_timeout_s)
                if self.params.sudo or self.params.stdin:
                    writer = asyncio.get_running_loop().run_in_executor(self.executor, self._write_stdin, channel)
                await self._pump(channel)
                # sshd sends the exit status before EOF, so it is nearly always here already.
                if channel.exit_status_ready():
                    exit_code = channel.recv_exit_status()
                else:
                    exit_code = await self._blocking(channel.recv_exit_status)
            await self.output.finish(exit_code)
        except TimeoutError:
            await self._stop_remote()
            raise SourceError(
                f"the command ran past its timeout of {limit:g} s and was stopped (TERM, then KILL)",
                code="command_timeout",
            ) from None
        except BaseException:
            await self._stop_remote()
            raise
        finally:
            if writer is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(writer, 5)
            if self.channel is not None:
                self.executor.submit(self.channel.close)

    # --- output --------------------------------------------------------------------------

    async def _pump(self, channel: paramiko.Channel) -> None:
        """Read stdout and stderr as they come, each in its own thread blocked in ``recv``
        (no polling: a command's end is seen at once), at most ``_AHEAD`` chunks ahead of
        the stream: a full stream stops the reads, and the remote command blocks on its pipe."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[str, bytes | BaseException | None]] = asyncio.Queue()
        room = threading.Semaphore(_AHEAD)
        stop = threading.Event()

        def reader(stream: str, recv: Any) -> None:
            try:
                while room.acquire(timeout=_POLL_S) or not stop.is_set():
                    if stop.is_set():
                        return
                    data = recv(_READ_BYTES)
                    loop.call_soon_threadsafe(chunks.put_nowait, (stream, data or None))
                    if not data:
                        return
            except Exception as exc:  # noqa: BLE001 - handed to the event loop
                loop.call_soon_threadsafe(chunks.put_nowait, (stream, exc))

        readers = asyncio.gather(
            loop.run_in_executor(self.executor, reader, "stdout", channel.recv),
            loop.run_in_executor(self.executor, reader, "stderr", channel.recv_stderr),
        )
        open_streams = 2
        try:
            while open_streams:
                stream, data = await chunks.get()
                room.release()
                if data is None:
                    open_streams -= 1
                    continue
                if isinstance(data, BaseException):
                    if not self.transport.is_active():
                        raise SourceUnavailable(f"the SSH connection dropped while the command ran: {data}")
                    raise SourceError(f"reading the command's {stream}: {data}", code="ssh_error")
                await self.output.add(stream, data)
        finally:
            stop.set()
            if open_streams:
                # Stopped early: the channel is closed next, which ends the blocked reads.
                readers.cancel()
            else:
                await readers

    # --- blocking, in worker threads -----------------------------------------------------

    def _open_and_start(self, timeout: float) -> paramiko.Channel:
        try:
            channel = self.transport.open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SourceUnavailable(f"opening a session: {exc}") from None
        self.channel = channel  # from here on, a timeout or cancel signals and closes it
        self._start(channel)
        return channel

    def _start(self, channel: paramiko.Channel) -> None:
        params = self.params
        if params.env:
            channel.update_environment(params.env)  # the server's AcceptEnv decides what it takes
        command = params.command or ""
        if params.sudo:
            # -S: the password from stdin (written first, never in argv); -p '': no prompt text
            # in the output; sh -c keeps the command's own quoting, pipes and redirections.
            command = f"sudo -S -p '' -- sh -c {shlex.quote(command)}"
        channel.exec_command(command)
        if not (params.sudo or params.stdin):
            # Nothing to write: EOF at once, so a command that reads stdin does not wait.
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.shutdown_write()

    def _write_stdin(self, channel: paramiko.Channel) -> None:
        params = self.params
        try:
            if params.sudo:
                password = self.ctx.credential.password if self.ctx.credential else None
                if password is None:
                    raise SourceError("sudo needs the credential's password", code="auth_failed")
                channel.sendall((password + "\n").encode())
            if params.stdin:
                channel.sendall(params.stdin.encode())
        finally:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.shutdown_write()

    async def _stop_remote(self) -> None:
        """TERM, then KILL, over the channel; then close it (which also hangs up a pty)."""
        channel = self.channel
        if channel is None or channel.closed:
            return
        with contextlib.suppress(Exception):
            _signal(channel, "TERM")
            for _ in range(int(_KILL_AFTER_S / _POLL_S)):
                if channel.exit_status_ready():
                    break
                await asyncio.sleep(_POLL_S)
            else:
                _signal(channel, "KILL")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._blocking(channel.close), 5)


def _signal(channel: paramiko.Channel, name: str) -> None:
    """RFC 4254 6.9 "signal" request (paramiko has no call for it)."""
    message = Message()
    message.add_byte(cMSG_CHANNEL_REQUEST)
    message.add_int(channel.remote_chanid)
    message.add_string("signal")
    message.add_boolean(False)
    message.add_string(name)
    transport = channel.get_transport()
    # How paramiko sends its own channel requests; the stubs leave it out.
    transport._send_user_message(message)  # type: ignore[attr-defined]  # noqa: SLF001
