"""Warm SSH transports, one per (profile, credential, host), shared by concurrent commands.

Connecting costs a TCP handshake, a key exchange, a host-key check and authentication:
tens of milliseconds on a LAN, most of a cheap command's time. A transport is kept open and
each command opens a channel on it (at most ``max_sessions`` at once; OpenSSH's own
``MaxSessions`` is 10 by default). One that died (server restart, network cut) is found by
``is_active()`` before use and replaced; one idle past ``idle_timeout_s`` is closed.
All blocking work runs in the plugin's threads.

A *spare session*: once a command has run on the transport, the next session channel is
opened as soon as the command ends, off any job's path (``spare_session = false`` in the
profile turns this off, for a device that limits or times out idle sessions). A command then
finds its channel open and starts at once: one round trip to the server (and a thread hop)
less than ``open_session`` then ``exec_command``. Sessions in use plus the spare never pass
``max_sessions``, so a server's ``MaxSessions`` set at or above it never refuses one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any

import paramiko

from bridgehead.plugins.ssh import hostkeys
from bridgehead.plugins.ssh.params import SshProfile
from bridgehead.sdk import Credential, SourceError, SourceUnavailable

log = logging.getLogger("bridgehead.plugins.ssh")
_KEEPALIVE_S = 30
# How long a refused session open is retried (see _open_session), and the refusals that mean
# "no room now": OpenSSH answers MaxSessions with CONNECT_FAILED; others use RESOURCE_SHORTAGE.
_ROOM_WAIT_S = 2.0
_REFUSAL_LOST_IN_A_RACE = "Unable to open channel."  # paramiko's words (see _open_session)
_REFUSED_FOR_ROOM = (paramiko.common.OPEN_FAILED_CONNECT_FAILED, paramiko.common.OPEN_FAILED_RESOURCE_SHORTAGE)


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
        self.executor = executor
        self.via = via
        self._slots = asyncio.Semaphore(profile.max_sessions)
        self._connecting = asyncio.Lock()
        self._transport: paramiko.Transport | None = None
        self._last_used = time.monotonic()
        self._in_use = 0  # slots held by jobs
        self._runs_commands = False  # a command has asked for a session: keep a spare from now on
        self._spare: concurrent.futures.Future[paramiko.Channel] | None = None
        self._idle_check: asyncio.TimerHandle | None = None
        self.writers = 0  # jobs writing stdin or a file through the transport
        self.connects = 0  # transports opened so far (reuse shows as one)
        self.spares_used = 0  # sessions a command found already open

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
        self._in_use += 1
        try:
            async with self._connecting:
                transport = self._transport
                idle = time.monotonic() - self._last_used > self.profile.idle_timeout_s
                if transport is None or not transport.is_active() or idle:
                    if transport is not None:
                        self._close_later(transport)
                    self._transport = None
                    self._drop_spare()
                    loop = asyncio.get_running_loop()
                    transport = await loop.run_in_executor(self.executor, self._connect)
                    self._transport = transport
                return transport
        except BaseException:
            self._in_use -= 1
            self._slots.release()
            raise

    def release(self) -> None:
        self._last_used = time.monotonic()
        self._in_use -= 1
        self._slots.release()
        transport = self._transport
        if transport is None:
            return
        if self._idle_check is None:
            loop = asyncio.get_running_loop()
            self._idle_check = loop.call_later(self.profile.idle_timeout_s, self._close_if_idle)
        self._refill(transport)  # none open: the first command, or another job took it

    async def session(self, transport: paramiko.Transport) -> paramiko.Channel:
        """A session channel on ``transport`` (held by ``acquire``): the spare if it is open,
        else a new one. Every job's channel comes from here."""
        self._runs_commands = True
        spare, self._spare = self._spare, None
        channel: paramiko.Channel | None = None
        if spare is not None:
            if not spare.done():
                try:
                    await asyncio.shield(asyncio.wrap_future(spare))
                except asyncio.CancelledError:
                    spare.add_done_callback(_close_channel)  # opened for no one: closed once open
                    raise
                except Exception:  # noqa: BLE001, S110 - a spare that failed: a new one below reports why
                    pass
            channel = spare.result() if spare.exception() is None else None
            if channel is not None and (channel.closed or channel.get_transport() is not transport):
                self.executor.submit(channel.close)
                channel = None
        if channel is None:
            channel = await asyncio.get_running_loop().run_in_executor(self.executor, self._open_session, transport)
        else:
            self.spares_used += 1
        # The next job's session opens while this one runs (the agent mostly waits on the
        # server then), once this job's first requests are out (call_soon: after its task
        # yields), so the opening thread does not compete with them for the interpreter.
        # This job holds a slot, so jobs with a channel plus the spare stay within
        # max_sessions, and the next job to get a slot takes the spare.
        if self._in_use < self.profile.max_sessions:
            asyncio.get_running_loop().call_soon(self._refill, transport)
        return channel

    def quiet(self, transport: paramiko.Transport) -> bool:
        """Whether a few small packets can go out on ``transport`` from the event loop without
        waiting: no key exchange under way, and no job pushing stdin or a file through it
        (a full socket would hold the loop until the server reads)."""
        return self.writers == 0 and bool(transport.clear_to_send.is_set())

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around a job's bulk writes (stdin, a file put): ``quiet`` is false meanwhile."""
        self.writers += 1
        try:
            yield
        finally:
            self.writers -= 1

    def _refill(self, transport: paramiko.Transport) -> None:
        if (
            self._runs_commands
            and self.profile.spare_session
            and self._spare is None
            and transport is self._transport
            and transport.is_active()
        ):
            self._spare = self.executor.submit(self._open_spare, transport)

    def discard(self, transport: paramiko.Transport) -> None:
        """A command found the transport broken: the next one connects afresh."""
        if self._transport is transport:
            self._transport = None
            self._drop_spare()
        self._close_later(transport)

    async def aclose(self) -> None:
        transport, self._transport = self._transport, None
        self._drop_spare()
        if self._idle_check is not None:
            self._idle_check.cancel()
            self._idle_check = None
        if transport is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, transport.close)

    def _close_if_idle(self) -> None:
        """Close the transport once no job has used it for ``idle_timeout_s`` (checked again
        at that time after each use, so a busy transport stays open)."""
        self._idle_check = None
        transport = self._transport
        if transport is None:
            return
        idle_for = time.monotonic() - self._last_used
        if self._in_use == 0 and idle_for >= self.profile.idle_timeout_s:
            log.info("connection %r: SSH transport to %s idle for %.0f s: closed", self.name, self.host, idle_for)
            self._transport = None
            self._drop_spare()
            self._close_later(transport)
        else:
            wait = max(0.0, self.profile.idle_timeout_s - idle_for)
            self._idle_check = asyncio.get_running_loop().call_later(wait, self._close_if_idle)

    def _drop_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.add_done_callback(_close_channel)

    def _close_later(self, transport: paramiko.Transport) -> None:
        asyncio.get_running_loop().run_in_executor(self.executor, transport.close)

    # --- blocking ------------------------------------------------------------------------

    def _open_session(self, transport: paramiko.Transport, wait_for_room: bool = True) -> paramiko.Channel:
        """A new session channel. A server refuses one past its MaxSessions, and counts a
        session of ours until it has processed its close, which may still be on the way
        (OpenSSH frees it a moment later even then): so a refusal is retried for a short
        while, unless ``wait_for_room`` is false (the spare: best effort)."""
        where = f"{self.host} port {self.profile.port}"
        deadline = time.monotonic() + min(_ROOM_WAIT_S, self.profile.connect_timeout_s)
        delay = 0.005
        while True:
            try:
                return transport.open_session(timeout=self.profile.connect_timeout_s)
            except paramiko.ChannelException as exc:
                if not wait_for_room or exc.code not in _REFUSED_FOR_ROOM or time.monotonic() + delay > deadline:
                    raise SourceUnavailable(
                        f"opening a session on {where}: the server refused it ({exc}); its MaxSessions may be "
                        f"below the profile's max_sessions = {self.profile.max_sessions}"
                    ) from None
            except paramiko.SSHException as exc:
                # paramiko keeps one "last refusal" per transport: when two threads are
                # refused at once, one takes both and the other gets this bare message. It
                # is a refusal all the same (a CI run met it), so it is waited out too.
                refused = str(exc) == _REFUSAL_LOST_IN_A_RACE and transport.is_active()
                if not wait_for_room or not refused or time.monotonic() + delay > deadline:
                    raise SourceUnavailable(f"opening a session on {where}: {exc}") from None
            except (OSError, EOFError) as exc:
                raise SourceUnavailable(f"opening a session on {where}: {exc}") from None
            time.sleep(delay)
            delay *= 2

    def _open_spare(self, transport: paramiko.Transport) -> paramiko.Channel:
        try:
            return self._open_session(transport, wait_for_room=False)
        except SourceUnavailable as exc:
            log.debug("connection %r: no spare session: %s", self.name, exc.message)
            raise

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


def _close_channel(future: concurrent.futures.Future[paramiko.Channel]) -> None:
    """Close the channel a future opened, if it did (in whichever thread it finished)."""
    if not future.cancelled() and future.exception() is None:
        with contextlib.suppress(Exception):
            future.result().close()
