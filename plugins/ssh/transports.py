"""Warm SSH transports, one per (profile, credential, host), shared by concurrent commands.

Connecting costs a TCP handshake, a key exchange, a host-key check and authentication:
tens of milliseconds on a LAN, most of a cheap command's time. A transport is kept open and
each command opens a channel on it (at most ``max_sessions`` at once; OpenSSH's own
``MaxSessions`` is 10 by default). One that died (server restart, network cut) is found by
``is_active()`` before use and replaced; one idle past ``idle_timeout_s`` is closed.
All blocking work runs in the plugin's threads.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import paramiko

from agent.errors import SourceError, SourceUnavailable
from agent.sdk import Credential
from plugins.ssh import hostkeys
from plugins.ssh.params import SshProfile

log = logging.getLogger("bridgehead.plugins.ssh")
_KEEPALIVE_S = 30


class HostTransports:
    def __init__(
        self,
        name: str,
        profile: SshProfile,
        credential: Credential | None,
        host: str,
        executor: Executor,
        via: Callable[[str, int, float], Any] | None = None,
    ) -> None:
        """``via(host, port, timeout)``, if given, opens the byte stream the SSH connection runs
        over (a channel through a jump host) instead of a TCP connection."""
        self.name = name
        self.profile = profile
        self.credential = credential
        self.host = host
        self._executor = executor
        self.via = via
        self._slots = asyncio.Semaphore(profile.max_sessions)
        self._connecting = asyncio.Lock()
        self._transport: paramiko.Transport | None = None
        self._last_used = time.monotonic()
        self.connects = 0  # transports opened so far (reuse shows as one)

    async def acquire(self, wait_s: float) -> paramiko.Transport:
        """A live, authenticated transport and a channel slot on it (``release`` gives it back)."""
        try:
            async with asyncio.timeout(wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise SourceError(
                f"connection {self.name!r}: all {self.profile.max_sessions} sessions to {self.host} stayed busy "
                f"for {wait_s:.3g} s (raise max_sessions or the job's timeout)",
                code="pool_exhausted",
                retryable=True,
            ) from None
        try:
            async with self._connecting:
                transport = self._transport
                idle = time.monotonic() - self._last_used > self.profile.idle_timeout_s
                if transport is None or not transport.is_active() or idle:
                    if transport is not None:
                        self._close_later(transport)
                    self._transport = None
                    loop = asyncio.get_running_loop()
                    transport = await loop.run_in_executor(self._executor, self._connect)
                    self._transport = transport
                return transport
        except BaseException:
            self._slots.release()
            raise

    def release(self) -> None:
        self._last_used = time.monotonic()
        self._slots.release()

    def discard(self, transport: paramiko.Transport) -> None:
        """A command found the transport broken: the next one connects afresh."""
        if self._transport is transport:
            self._transport = None
        self._close_later(transport)

    async def aclose(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, transport.close)

    def _close_later(self, transport: paramiko.Transport) -> None:
        asyncio.get_running_loop().run_in_executor(self._executor, transport.close)

    # --- blocking ------------------------------------------------------------------------

    def _connect(self) -> paramiko.Transport:
        profile, host, port = self.profile, self.host, self.profile.port
        where = f"{host} port {port}"
        try:
            if self.via is not None:
                sock = self.via(host, port, profile.connect_timeout_s)
            else:
                sock = socket.create_connection((host, port), timeout=profile.connect_timeout_s)
                # Without it every command stalls ~40 ms: paramiko writes a channel request in
                # small packets and Nagle holds the next one until the server's delayed ACK
                # (measured: 48 ms per warm command, 4-5 ms with it; bench/ssh_latency.py).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            how = f" through jump host {self.profile.jump!r}" if self.via is not None else ""
            raise SourceUnavailable(f"connecting to {where}{how}: {getattr(exc, 'strerror', None) or exc}") from None
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = profile.connect_timeout_s
            transport.auth_timeout = profile.connect_timeout_s
            try:
                transport.start_client(timeout=profile.connect_timeout_s)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise SourceUnavailable(f"SSH handshake with {where}: {exc}") from None
            # Before any credential is sent: a server that cannot prove who it is gets nothing.
            hostkeys.check(profile, host, port, transport.get_remote_server_key())
            self._authenticate(transport, where)
            transport.set_keepalive(_KEEPALIVE_S)
        except BaseException:
            transport.close()
            raise
        self.connects += 1
        log.info("connection %r: SSH transport to %s opened (%d so far)", self.name, where, self.connects)
        return transport

    def _authenticate(self, transport: paramiko.Transport, where: str) -> None:
        credential = self.credential
        if credential is None or credential.username is None:
            raise SourceError(f"connection {self.name!r}: its credential must give a username", code="auth_failed")
        user = credential.username
        try:
            if credential.private_key_file is not None:
                try:
                    passphrase = credential.passphrase.encode() if credential.passphrase is not None else None
                    # bytes: cryptography, under paramiko 5, refuses a str (the stubs say str).
                    key = paramiko.PKey.from_path(credential.private_key_file, passphrase)  # type: ignore[arg-type]
                except (OSError, paramiko.SSHException, ValueError, TypeError) as exc:
                    raise SourceError(f"private key {credential.private_key_file}: {exc}", code="auth_failed") from None
                transport.auth_publickey(user, key)
            elif credential.password is not None:
                transport.auth_password(user, credential.password)
            else:
                raise SourceError(
                    f"connection {self.name!r}: its credential gives neither private_key_file nor a password",
                    code="auth_failed",
                )
        except paramiko.AuthenticationException as exc:
            raise SourceError(f"authenticating as {user} on {where}: {exc}", code="auth_failed") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SourceUnavailable(f"authenticating as {user} on {where}: {exc}") from None
        if not transport.is_authenticated():
            raise SourceError(f"authenticating as {user} on {where}: refused", code="auth_failed")
