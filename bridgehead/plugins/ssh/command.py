"""``Command``: one command on a warm SSH transport, its output streamed as records (the
flow is described in bridgehead/plugins/ssh/plugin.py). Imported with the first ssh job: it needs
paramiko, which an idle agent does not load."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import threading
from typing import Any

import paramiko
from paramiko.common import cMSG_CHANNEL_REQUEST
from paramiko.message import Message

from bridgehead.plugins.ssh.on_transport import OnTransport
from bridgehead.plugins.ssh.output import CommandOutput
from bridgehead.plugins.ssh.params import SshParams, SshProfile
from bridgehead.plugins.ssh.transports import HostTransports
from bridgehead.sdk import JobContext, SourceError, SourceUnavailable

_READ_BYTES = 64 * 1024
_POLL_S = 0.05
_AHEAD = 8  # chunks read ahead of the record stream, per command
_KILL_AFTER_S = 2.0
_STATUS_SPINS = 20  # turns of the event loop to wait for the exit status before a thread does


class Command(OnTransport):
    def __init__(
        self,
        ctx: JobContext[SshProfile],
        params: SshParams,
        transport: paramiko.Transport,
        pool: HostTransports,
        output: type[CommandOutput] = CommandOutput,
    ) -> None:
        super().__init__(ctx, params, transport, pool)
        self.channel: paramiko.Channel | None = None
        profile = ctx.profile
        self.output = output(ctx, profile.inline_output_bytes, profile.max_output_bytes)

    async def run(self) -> None:
        params, profile = self.params, self.ctx.profile
        limit = min(params.timeout_s or profile.timeout_s, profile.timeout_s)
        loop = asyncio.get_running_loop()
        starter: asyncio.Future[None] | None = None
        writes = bool(params.sudo or params.stdin)
        if params.sudo:
            self._sudo_password()  # refused before anything runs
        try:
            async with asyncio.timeout(limit):
                channel = self.channel = await self.pool.session(self.transport)
                # From here on, a timeout or cancel signals and closes the channel.
                # The exec request is not waited for: the server's answer arrives ahead of the
                # output and is checked once the output has ended. With nothing to write and the
                # transport quiet it goes out from here (a thread hop costs ~0.1-0.2 ms of a
                # ~2.5 ms command); else from a thread, which then writes stdin.
                if writes or not self.pool.quiet(self.transport):
                    starter = loop.run_in_executor(self.executor, self._start, channel, writes)
                else:
                    self._start(channel, writes)
                if not await self._pump_polled(channel, loop):
                    await self._pump(channel)
                if starter is not None:
                    await starter
                if channel.event.is_set() and not channel.event_ready:  # closed with no yes to the exec
                    if not self.transport.is_active():
                        raise SourceUnavailable("the SSH connection dropped as the command started")
                    raise SourceError("the server refused to run the command (exec request failed)", code="ssh_error")
                # sshd sends the exit status next to EOF: it is nearly always here already, or
                # a moment later (paramiko's thread has it to read). Else wait in a thread.
                for _ in range(_STATUS_SPINS):
                    if channel.exit_status_ready():
                        break
                    await asyncio.sleep(0)
                if channel.exit_status_ready():
                    exit_code = channel.recv_exit_status()
                else:
                    exit_code = await self._blocking(channel.recv_exit_status)
                if exit_code == -1 and not self.transport.is_active():
                    raise SourceUnavailable("the SSH connection dropped while the command ran")
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
            if starter is not None and not starter.done():
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(starter, 5)
            used = self.channel
            if used is not None:
                if used.closed:  # by sshd, once the command ended: close() only frees the pipe
                    used.close()  # that fileno() made (two descriptors), sending nothing
                else:
                    self.executor.submit(used.close)

    # --- output --------------------------------------------------------------------------

    async def _pump_polled(self, channel: paramiko.Channel, loop: asyncio.AbstractEventLoop) -> bool:
        """Read stdout and stderr on the event loop, woken by the channel's pipe (paramiko
        sets it when either buffer has data or the channel ends): no thread hop per chunk.
        While the record stream is full nothing is read, so paramiko's window fills and the
        remote command blocks on its pipe. False, having read nothing, where the loop cannot
        watch a pipe (Windows' proactor loop)."""
        fd = channel.fileno()
        open_streams = {"stdout": channel.recv, "stderr": channel.recv_stderr}
        ready = {"stdout": channel.recv_ready, "stderr": channel.recv_stderr_ready}
        while open_streams:
            woken: asyncio.Future[None] = loop.create_future()
            try:
                loop.add_reader(fd, _wake, woken)
            except NotImplementedError:
                return False
            try:
                await woken
            finally:
                loop.remove_reader(fd)
            progressed = True
            while progressed and open_streams:
                progressed = False
                for stream, recv in list(open_streams.items()):
                    # EOF first: once it is seen, all of the stream's data is already buffered.
                    ended = channel.eof_received or channel.closed
                    if ready[stream]():
                        await self.output.add(stream, recv(_READ_BYTES))  # buffered: returns at once
                        progressed = True
                    elif ended:
                        del open_streams[stream]
        return True

    async def _pump(self, channel: paramiko.Channel) -> None:
        """Where the loop cannot watch the channel's pipe (Windows' proactor loop): read
        stdout and stderr as they come, each in its own thread blocked in ``recv`` (no
        polling: a command's end is seen at once), at most ``_AHEAD`` chunks ahead of the
        stream: a full stream stops the reads, and the remote command blocks on its pipe."""
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

    def _start(self, channel: paramiko.Channel, writes: bool) -> None:
        """Environment, the exec request (its answer not awaited), then stdin and EOF."""
        params = self.params
        try:
            if params.env:
                channel.update_environment(params.env)  # the server's AcceptEnv decides what it takes
            profile = self.ctx.profile
            assert params.command is not None  # noqa: S101 - SshParams checks it for "exec"
            command = profile.remote_command(params.command)
            if params.sudo:
                # -S: the password from stdin (written first, never in argv); -p '': no prompt
                # text in the output. A shell line runs in sh -c (its pipes and redirections);
                # an argv runs as it is, sudo's own argv after "--".
                shell = profile.shell_line(params.command) is not None
                command = f"sudo -S -p '' -- {f'sh -c {shlex.quote(command)}' if shell else command}"
            _exec_no_wait(channel, command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            with contextlib.suppress(Exception):
                channel.close()  # ends the output pump; this error is the job's
            raise SourceUnavailable(f"starting the command: {exc}") from None
        if writes:
            with self.pool.writing():
                self._write_stdin(channel)
        else:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.shutdown_write()  # EOF at once: a command that reads stdin does not wait

    def _write_stdin(self, channel: paramiko.Channel) -> None:
        """sudo's password, then stdin, then EOF. A command may end without reading all of
        its stdin: the write then fails, which is not the job's error (its exit status is)."""
        params = self.params
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            if params.sudo:
                channel.sendall((self._sudo_password() + "\n").encode())
            if params.stdin:
                channel.sendall(params.stdin.encode())
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            channel.shutdown_write()

    def _sudo_password(self) -> str:
        password = self.ctx.credential.password if self.ctx.credential else None
        if password is None:
            raise SourceError("sudo needs the credential's password (password_env or _file)", code="auth_failed")
        return password

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


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _exec_no_wait(channel: paramiko.Channel, command: str) -> None:
    """``exec_command`` without waiting for the server's answer (paramiko's waits): the
    answer comes back ahead of the command's output, and ``run`` checks it after. On a
    refusal paramiko closes the channel, which ends the output at once."""
    channel._event_pending()  # type: ignore[attr-defined]  # noqa: SLF001 - as exec_command does
    _request(channel, "exec", command, want_reply=True)


def _signal(channel: paramiko.Channel, name: str) -> None:
    """RFC 4254 6.9 "signal" request (paramiko has no call for it)."""
    _request(channel, "signal", name, want_reply=False)


def _request(channel: paramiko.Channel, kind: str, argument: str, want_reply: bool) -> None:
    """A channel request with one string argument, sent as paramiko sends its own."""
    message = Message()
    message.add_byte(cMSG_CHANNEL_REQUEST)
    message.add_int(channel.remote_chanid)
    message.add_string(kind)
    message.add_boolean(want_reply)
    message.add_string(argument)
    transport = channel.get_transport()
    # How paramiko sends its own channel requests; the stubs leave it out.
    transport._send_user_message(message)  # type: ignore[attr-defined]  # noqa: SLF001
