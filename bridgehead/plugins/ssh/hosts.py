"""``SshHosts``: warm SSH transports by connection and host, and a command or file transfer
run on one. The ``ssh`` plugin runs its jobs through it; the ``powershell`` plugin holds one
of its own for its ssh transport (composition: everything about the connection is ssh's).

This module loads without paramiko: the transports and the code on them come with the first
job, not at agent start, about 5 MB an agent that never runs one does not carry (the
idle-memory goal, DESIGN.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import TYPE_CHECKING, Any

from bridgehead.plugins.ssh.output import CommandOutput
from bridgehead.plugins.ssh.params import SshParams, SshProfile
from bridgehead.sdk import Credential, JobContext, JobError, SourceError, SourceUnavailable

if TYPE_CHECKING:
    import paramiko

    from bridgehead.plugins.ssh.transports import HostTransports

_MAX_THREADS = 64


class SshHosts:
    """The transport pools of one plugin instance, and the threads their blocking calls use."""

    def __init__(self) -> None:
        self._hosts: dict[tuple[str, Credential | None, str], HostTransports] = {}
        # Shared with what else the owner runs in threads (powershell's psrp sessions).
        self.executor = concurrent.futures.ThreadPoolExecutor(_MAX_THREADS, thread_name_prefix="ssh")

    def transports(self, name: str, profile: SshProfile, credential: Credential | None, host: str) -> HostTransports:
        from bridgehead.plugins.ssh.transports import HostTransports  # noqa: PLC0415 - paramiko on first use

        key = (name, credential, host.lower())
        pool = self._hosts.get(key)
        if pool is None or pool.profile != profile:
            pool = self._hosts[key] = HostTransports(name, profile, credential, host, self.executor)
        return pool

    def pools(self) -> list[HostTransports]:
        """The warm pools, one per connection, credential and host (for tests and diagnostics)."""
        return list(self._hosts.values())

    async def execute(
        self, ctx: JobContext[Any], params: SshParams, output: type[CommandOutput] = CommandOutput
    ) -> None:
        """Run ``params`` (a command, or a file transfer) on the host's warm transport, for a
        job whose profile is an ``SshProfile``; the command's records are ``output``'s (the
        powershell plugin brings its own)."""
        profile: SshProfile = ctx.profile
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

    async def _jump_route(self, ctx: JobContext[Any], name: str, jump: str) -> Any:
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
        """Close every pooled transport, then the threads."""
        pools, self._hosts = list(self._hosts.values()), {}
        for pool in pools:
            await pool.aclose()
        await asyncio.get_running_loop().run_in_executor(None, self.executor.shutdown, True)
