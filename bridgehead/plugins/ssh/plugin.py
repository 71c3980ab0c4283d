"""``SshPlugin``: one command on one host, its output streamed as records (the command's
side is bridgehead/plugins/ssh/command.py; this module loads without paramiko).

The flow of a job::

    the command as argv (a list, or a string split as a POSIX shell would), checked against
    allowed_commands, and the host against the profile (before any connection: check_policy);
    a shell line only where the profile says allow_shell
    take a warm transport to the host, or open one (host key checked before authentication)
    take the pool's spare session channel, or open one (bridgehead/plugins/ssh/transports.py)
    environment; exec, its answer not awaited; stdin (sudo's password first) from a thread
    read stdout and stderr as they come, on the event loop woken by the channel's pipe
      short output: one record {"exit_code", "stdout", "stderr"}
      past inline_output_bytes: chunk records {"stream", "offset", "data"}, then a final
      {"exit_code", "stdout_bytes", "stderr_bytes", "streamed": true}; the stream's
      backpressure holds the reads, and so the remote command (its pipes fill)

A timeout or a cancel ends the remote process: a TERM signal over the channel, a KILL two
seconds later, then the channel is closed. (OpenSSH delivers "signal" requests since 7.9.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import TYPE_CHECKING, Any

from bridgehead.core.errors import InvalidParams, JobError, PolicyDenied, SourceError, SourceUnavailable
from bridgehead.plugins.ssh.output import CommandOutput
from bridgehead.plugins.ssh.params import SshParams, SshProfile
from bridgehead.sdk import Credential, JobContext, Plugin

if TYPE_CHECKING:
    import paramiko

    from bridgehead.plugins.ssh.transports import HostTransports

_MAX_THREADS = 64


class SshPlugin(Plugin[SshParams, SshProfile]):
    name = "ssh"
    version = "1"
    params_type = SshParams
    profile_type = SshProfile
    safe_to_repeat = False  # a command may change the host: never run twice by the relay

    def __init__(self) -> None:
        self._hosts: dict[tuple[str, Credential | None, str], HostTransports] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(_MAX_THREADS, thread_name_prefix="ssh")

    def check_policy(self, profile: SshProfile, params: SshParams) -> None:
        if params.command is not None:
            check_command(profile, params)
        if params.path is not None and not profile.allows_path(params.path):
            raise PolicyDenied(
                f"{params.path} is not under the profile's sftp_paths"
                if profile.sftp_paths is not None
                else "file transfer is off for this profile (no sftp_paths)"
            )
        try:
            profile.target(params.host)
        except ValueError as exc:
            raise PolicyDenied(str(exc)) from None
        if params.timeout_s is not None and params.timeout_s > profile.timeout_s:
            raise InvalidParams(f"timeout_s {params.timeout_s:g} is over the profile's timeout_s {profile.timeout_s:g}")

    def transports(self, name: str, profile: SshProfile, credential: Credential | None, host: str) -> HostTransports:
        # paramiko and the code on it come with the first job, not at agent start: about 5 MB
        # an agent that never runs one does not carry (the idle-memory goal, DESIGN.md).
        from bridgehead.plugins.ssh.transports import HostTransports  # noqa: PLC0415

        key = (name, credential, host.lower())
        pool = self._hosts.get(key)
        if pool is None or pool.profile != profile:
            pool = self._hosts[key] = HostTransports(name, profile, credential, host, self._executor)
        return pool

    async def run(self, ctx: JobContext[SshProfile], params: SshParams) -> None:
        self.check_policy(ctx.profile, params)  # again: a job may reach run without the agent's check
        await self.execute(ctx, params)

    async def execute(
        self, ctx: JobContext[Any], params: SshParams, output: type[CommandOutput] = CommandOutput
    ) -> None:
        """Run ``params`` (a command, or a file transfer) on the host's warm transport; the
        command's records are ``output``'s (the powershell plugin brings its own)."""
        profile = ctx.profile
        host = profile.target(params.host)
        pool = self.transports(params.connection, profile, ctx.credential, host)
        if profile.jump is not None:
            pool.via = await self._jump_route(ctx, params.connection, profile.jump)
        transport = await pool.acquire(ctx.remaining_s)
        from bridgehead.plugins.ssh.command import Command  # noqa: PLC0415 - with paramiko, above
        from bridgehead.plugins.ssh.files import FileTransfer  # noqa: PLC0415

        try:
            if params.op == "exec":
                await Command(ctx, params, transport, pool, output).run()
            else:
                await FileTransfer(ctx, params, transport, pool).run()
        except SourceUnavailable:
            pool.discard(transport)
            raise
        finally:
            pool.release()

    async def _jump_route(self, ctx: JobContext[SshProfile], name: str, jump: str) -> Any:
        """How to reach a host through profile ``jump``: a direct-tcpip channel on the jump
        host's warm transport (its own host key and credential checked as for any job)."""
        try:
            jump_profile, jump_credential = ctx.other_connection(jump)
        except JobError as exc:
            raise SourceError(f"connection {name!r}: its jump host: {exc.message}", code="invalid_profile") from None
        if not isinstance(jump_profile, SshProfile) or jump_profile.jump is not None or jump_profile.host is None:
            raise SourceError(
                f"connection {name!r}: jump = {jump!r} must name an ssh profile with one host and no jump of its own",
                code="invalid_profile",
            )
        jump_pool = self.transports(jump, jump_profile, jump_credential, jump_profile.host)
        jump_transport = await jump_pool.acquire(ctx.remaining_s)
        jump_pool.release()  # the transport stays pooled; the channel opened on it is the target's

        def via(host: str, port: int, timeout: float) -> paramiko.Channel:
            return jump_transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)

        return via

    async def aclose(self) -> None:
        pools, self._hosts = list(self._hosts.values()), {}
        for pool in pools:
            await pool.aclose()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)


def check_command(profile: SshProfile, params: SshParams) -> None:
    """The job's command is one the profile allows: a shell line only with allow_shell, else
    an argv (``invalid_params`` if the string is not one) matching allowed_commands, and only
    the environment variables allowed_env names."""
    command = params.command
    assert command is not None  # noqa: S101 - the caller checked
    if profile.shell_line(command) is None:
        try:
            argv = profile.argv(command)
        except ValueError as exc:
            raise InvalidParams(str(exc)) from None
        if not profile.allows(argv):
            raise PolicyDenied(f"the command is not among the profile's allowed_commands: {argv!r:.200}")
    refused = sorted(name for name in params.env if not profile.allows_env(name))
    if refused:
        raise PolicyDenied(
            f"environment variables {', '.join(refused)} are not among the profile's allowed_env "
            "(with allowed_commands, a job sets only the variables allowed_env names)"
        )
