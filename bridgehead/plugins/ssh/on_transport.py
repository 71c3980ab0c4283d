"""``OnTransport``: what a command and a file transfer share, one job on a warm transport."""

from __future__ import annotations

import asyncio
from typing import Any

import paramiko

from bridgehead.plugins.ssh.params import SshParams, SshProfile
from bridgehead.plugins.ssh.transports import HostTransports
from bridgehead.sdk import JobContext


class OnTransport:
    def __init__(
        self,
        ctx: JobContext[SshProfile],
        params: SshParams,
        transport: paramiko.Transport,
        pool: HostTransports,
    ) -> None:
        """``transport`` is held from ``pool``, which gives the job its session channel and
        the threads its blocking calls run in."""
        self.ctx = ctx
        self.params = params
        self.transport = transport
        self.pool = pool
        self.executor = pool.executor

    async def _blocking(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
