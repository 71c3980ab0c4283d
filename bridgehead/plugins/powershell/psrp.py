"""PowerShell Remoting (WinRM / PSRP) with pypsrp: warm runspace pools, streamed output.

UNVERIFIED AGAINST A REAL SERVER: no WinRM server can run on the Linux machine this project
is built and tested on. What the tests check for real is pypsrp's connection, TLS and
authentication failures against real loopback HTTP(S) servers; the pipeline path (output,
errors, streaming, stop on timeout and cancel, reuse) runs against a stand-in for pypsrp's
``RunspacePool`` and ``PowerShell`` that the tests name as such. docs/plugins/powershell.md
says the same.

The flow of a job::

    take an idle runspace pool for (connection, credential, host), or open one (WSMan over
    HTTPS by default; pypsrp's negotiate/ntlm/kerberos/credssp/basic), at most max_sessions
    pools per target, each running one pipeline at a time
    add the structured call (add_cmdlet, add_parameter: no text parsed) or the free script
    (text: piped to Out-String -Stream, so objects arrive as the lines PowerShell would print;
    json: inside ConvertTo-Json, or a call piped to it), begin_invoke
    poll (each poll waits up to operation_timeout_s on the server); hand new output lines and
    error records to the record stream, waiting for it (backpressure: no poll until taken)
    exit_code: 1 if the pipeline failed or wrote error records, else 0

A timeout or cancel stops the pipeline (PSRP's Ctrl+C signal) from the polling thread at its
next poll, and the job waits for that before it ends; a pool that failed is closed, not reused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridgehead.plugins.powershell.params import PowershellParams, PowershellProfile, wrapped_script
from bridgehead.plugins.ssh import CommandOutput
from bridgehead.sdk import Credential, JobContext, SourceError, SourceUnavailable

log = logging.getLogger("bridgehead.plugin.powershell")

_DELIVER_WAIT_S = 0.5  # how often a thread waiting on the record stream looks for a stop
_STOP_WAIT_S = 30.0  # longest a timed-out job waits for the remote pipeline to stop


class Pipeline(Protocol):
    """The part of ``pypsrp.powershell.PowerShell`` this module uses."""

    state: int
    had_errors: bool
    output: list[Any]
    streams: Any

    def add_script(self, script: str) -> Any: ...
    def add_cmdlet(self, cmdlet: str) -> Any: ...
    def add_parameter(self, name: str, value: Any = None) -> Any: ...
    def begin_invoke(self) -> None: ...
    def poll_invoke(self, timeout: int | None = None) -> None: ...
    def stop(self) -> None: ...


class RunspacePool(Protocol):
    """The part of ``pypsrp.powershell.RunspacePool`` this module uses."""

    def close(self) -> None: ...


OpenPool = Callable[[PowershellProfile, Credential | None, str], RunspacePool]
NewPipeline = Callable[[RunspacePool], Pipeline]

_RUNNING = 1  # pypsrp.complex_objects.PSInvocationState.RUNNING


class _Stopped(Exception):
    """The job ended (timeout or cancel) while the pipeline ran; it has been stopped."""


def open_runspace_pool(profile: PowershellProfile, credential: Credential | None, host: str) -> RunspacePool:
    """A real pypsrp runspace pool, opened (blocking). pypsrp is imported here, not at module
    load: an agent that never runs PSRP never pays for it (idle RSS, DESIGN.md)."""
    import requests
    from pypsrp.exceptions import AuthenticationError, WinRMError, WinRMTransportError
    from pypsrp.powershell import RunspacePool as PypsrpPool
    from pypsrp.wsman import WSMan

    if credential is None or credential.password is None:
        raise SourceError("PSRP needs the credential's username and password", code="auth_failed")
    port = profile.winrm_port()
    where = f"{'https' if profile.ssl else 'http'}://{host}:{port}/wsman"
    wsman = WSMan(
        host,
        port=port,
        username=credential.username,
        password=credential.password,
        ssl=profile.ssl,
        auth=profile.auth,
        # A CA file path goes to requests' verify as is (pypsrp's hint says bool; its code
        # hands it to requests' Session.verify).
        cert_validation=profile.ca_file or profile.verify,  # type: ignore[arg-type]
        connection_timeout=max(1, int(profile.connect_timeout_s)),
        operation_timeout=profile.operation_timeout_s,
        # A poll waits operation_timeout_s on the server; the HTTP read must outlast it.
        read_timeout=profile.operation_timeout_s + 10,
        encryption=profile.encryption,
    )
    pool = PypsrpPool(wsman, configuration_name=profile.configuration_name)
    try:
        pool.open()
    except AuthenticationError as exc:
        raise SourceError(f"WinRM at {where} refused {credential.username!r}: {exc}", code="auth_failed") from None
    except WinRMTransportError as exc:
        if exc.code == 401:
            raise SourceError(
                f"WinRM at {where} refused {credential.username!r} (auth = {profile.auth}): HTTP 401",
                code="auth_failed",
            ) from None
        raise SourceUnavailable(f"WinRM at {where}: HTTP {exc.code}: {exc.response_text[:300]}") from None
    except requests.exceptions.SSLError as exc:
        raise SourceError(f"TLS with {where} failed: {_reason(exc)}", code="tls_failed") from None
    except requests.exceptions.RequestException as exc:
        raise SourceUnavailable(f"connecting to {where}: {_reason(exc)}") from None
    except WinRMError as exc:
        raise SourceError(f"WinRM at {where}: {exc}", code="winrm_error") from None
    return pool


def new_pypsrp_pipeline(pool: RunspacePool) -> Pipeline:
    from pypsrp.powershell import PowerShell

    pipeline: Pipeline = PowerShell(pool)  # type: ignore[arg-type]  # the pool open_runspace_pool made
    return pipeline


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests error (urllib3 nests them three deep)."""
    while exc.__context__ is not None and exc.__context__ is not exc:
        exc = exc.__context__
    return str(exc)[:300]


@dataclass
class _Target:
    slots: asyncio.Semaphore
    idle: list[tuple[RunspacePool, float]] = field(default_factory=list)
    opened: int = 0  # pools opened so far (reuse shows as one)


class PsrpSessions:
    """Warm runspace pools per (connection, credential, host)."""

    def __init__(
        self,
        executor: concurrent.futures.Executor,
        open_pool: OpenPool = open_runspace_pool,
        new_pipeline: NewPipeline = new_pypsrp_pipeline,
    ) -> None:
        self._executor = executor
        self._open_pool = open_pool
        self._new_pipeline = new_pipeline
        self._targets: dict[tuple[str, Credential | None, str], _Target] = {}

    def target(self, name: str, profile: PowershellProfile, credential: Credential | None, host: str) -> _Target:
        key = (name, credential, host.lower())
        if key not in self._targets:
            self._targets[key] = _Target(asyncio.Semaphore(profile.max_sessions))
        return self._targets[key]

    async def run(
        self,
        ctx: JobContext[PowershellProfile],
        params: PowershellParams,
        host: str,
        output: CommandOutput,
    ) -> None:
        profile = ctx.profile
        target = self.target(params.connection, profile, ctx.credential, host)
        try:
            async with asyncio.timeout(ctx.remaining_s):
                await target.slots.acquire()
        except TimeoutError:
            raise SourceError(
                f"connection {params.connection!r}: all {profile.max_sessions} sessions to {host} stayed busy",
                code="pool_exhausted",
                retryable=True,
            ) from None
        try:
            pool = await self._take(target, profile, ctx.credential, host)
            limit = min(params.timeout_s or profile.timeout_s, profile.timeout_s)
            usable = [False]  # set by _invoke: the pipeline ended, or was stopped cleanly
            try:
                await self._invoke(ctx, params, pool, output, limit, usable)
            finally:
                if usable[0]:
                    target.idle.append((pool, time.monotonic()))
                else:
                    self._executor.submit(_close_quietly, pool)
        finally:
            target.slots.release()

    async def _take(
        self, target: _Target, profile: PowershellProfile, credential: Credential | None, host: str
    ) -> RunspacePool:
        now = time.monotonic()
        while target.idle:
            pool, since = target.idle.pop()
            if now - since <= profile.idle_timeout_s:
                return pool
            self._executor.submit(_close_quietly, pool)
        loop = asyncio.get_running_loop()
        pool = await loop.run_in_executor(self._executor, self._open_pool, profile, credential, host)
        target.opened += 1
        log.info("PSRP runspace pool to %s opened (%d so far)", host, target.opened)
        return pool

    async def _invoke(
        self,
        ctx: JobContext[PowershellProfile],
        params: PowershellParams,
        pool: RunspacePool,
        output: CommandOutput,
        limit: float,
        usable: list[bool],
    ) -> None:
        """Run the pipeline; ``usable[0]`` says afterwards whether the pool may serve again (a
        pipeline stopped cleanly on a timeout or cancel leaves it as good as one that ended)."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        running = loop.run_in_executor(
            self._executor, self._pipeline, loop, pool, params, output, stop, ctx.profile.operation_timeout_s
        )
        try:
            async with asyncio.timeout(limit):
                exit_code = await asyncio.shield(running)
        except TimeoutError:
            usable[0] = await _stopped(running, stop)
            raise SourceError(
                f"the script ran past its timeout of {limit:g} s and was stopped", code="command_timeout"
            ) from None
        except BaseException:
            usable[0] = await _stopped(running, stop)
            raise
        usable[0] = True
        await output.finish(exit_code)

    def _pipeline(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: RunspacePool,
        params: PowershellParams,
        output: CommandOutput,
        stop: threading.Event,
        poll_s: int,
    ) -> int:
        """Runs in a worker thread: the whole life of one pipeline."""
        from_pypsrp = _pypsrp_errors()
        ps = self._new_pipeline(pool)
        if params.command is not None:
            # A structured call goes as a command and its parameters, values as PSRP's typed
            # objects: nothing of it is parsed as script text on the server.
            ps.add_cmdlet(params.command)
            for name, value in params.parameters.items():
                ps.add_parameter(name, value)
            if params.output == "json":
                ps.add_cmdlet("ConvertTo-Json").add_parameter("Depth", 8).add_parameter("Compress")
        else:
            ps.add_script(wrapped_script(params.script_text(), params.output))
        if params.output == "text":
            # Objects as the lines PowerShell would print for them, one string each.
            ps.add_cmdlet("Out-String").add_parameter("Stream")
        errors_seen = 0
        try:
            ps.begin_invoke()
            while True:
                if stop.is_set():
                    ps.stop()
                    raise _Stopped
                if ps.state != _RUNNING:
                    break
                ps.poll_invoke(timeout=poll_s)
                lines, ps.output = ps.output, []  # taken: memory stays one poll's worth
                if lines:
                    text = "".join(f"{line}\n" for line in lines)
                    self._deliver(loop, output, "stdout", text.encode(), stop, ps)
                errors = ps.streams.error
                if len(errors) > errors_seen:
                    text = "".join(f"{_error_text(e)}\n" for e in errors[errors_seen:])
                    errors_seen = len(errors)
                    self._deliver(loop, output, "stderr", text.encode(), stop, ps)
        except from_pypsrp as exc:
            raise SourceUnavailable(f"the PSRP pipeline failed: {exc}") from None
        return 1 if ps.had_errors or errors_seen else 0

    @staticmethod
    def _deliver(
        loop: asyncio.AbstractEventLoop,
        output: CommandOutput,
        stream: str,
        data: bytes,
        stop: threading.Event,
        ps: Pipeline,
    ) -> None:
        """Hand ``data`` to the record stream and wait until it is taken (no poll meanwhile:
        the server keeps the rest), looking for a stop now and then."""
        future = asyncio.run_coroutine_threadsafe(output.add(stream, data), loop)
        while True:
            try:
                future.result(timeout=_DELIVER_WAIT_S)
                return
            except concurrent.futures.TimeoutError:
                if stop.is_set():
                    future.cancel()
                    ps.stop()
                    raise _Stopped from None

    async def aclose(self) -> None:
        targets, self._targets = list(self._targets.values()), {}
        loop = asyncio.get_running_loop()
        for target in targets:
            for pool, _ in target.idle:
                await loop.run_in_executor(self._executor, _close_quietly, pool)

    def opened(self) -> int:
        return sum(t.opened for t in self._targets.values())


async def _stopped(running: asyncio.Future[int], stop: threading.Event) -> bool:
    """Ask the pipeline's thread to stop it, and wait (bounded) until it has: whether it
    stopped cleanly (or had ended), rather than failed or outlived the wait."""
    stop.set()
    try:
        await asyncio.wait_for(asyncio.shield(running), _STOP_WAIT_S)
    except _Stopped:
        return True
    except BaseException:  # noqa: BLE001 - a pipeline that failed or would not stop: pool dropped
        return False
    return True


def _pypsrp_errors() -> tuple[type[BaseException], ...]:
    try:
        import requests
        from pypsrp.exceptions import WinRMError
    except ImportError:  # a stand-in pipeline in a build without pypsrp
        return (OSError,)
    return (WinRMError, requests.exceptions.RequestException, OSError)


def _error_text(record: Any) -> str:
    """An ErrorRecord's message, as PowerShell shows it."""
    details = getattr(record, "details_message", None)
    if isinstance(details, str) and details:
        return details
    shown = str(record)  # pypsrp: the record's ToString from the CLIXML, the error's message
    if shown and shown != "None":
        return shown
    exception = getattr(record, "exception", None)
    for properties in (getattr(exception, "adapted_properties", None), getattr(exception, "extended_properties", None)):
        message = properties.get("Message") if isinstance(properties, dict) else None
        if isinstance(message, str) and message:
            return message
    return "an error record without a message"


def _close_quietly(pool: RunspacePool) -> None:
    try:
        pool.close()
    except Exception as exc:  # noqa: BLE001 - a broken pool's close fails too; it is dropped either way
        log.debug("closing a PSRP runspace pool: %s", exc)
