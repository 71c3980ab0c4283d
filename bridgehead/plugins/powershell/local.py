"""PowerShell on the agent's own machine (``transport = "local"``): a child process per script.

Meant for a Windows agent (``executable = "powershell.exe"`` or ``"pwsh"``); it runs wherever
the executable exists, which is how the tests run it for real on Linux, with a stand-in
interpreter. The Windows-only parts (killing the process tree with taskkill, the Windows
environment allow-list) are UNVERIFIED: no Windows machine is available to this project's
tests; docs/plugins/powershell.md says so.

    argv: EXECUTABLE -NoProfile -NonInteractive -EncodedCommand <base64 of UTF-16LE>
          (no shell; the script never passes through one)
    environment: an allow-list (PATH, HOME, SystemRoot ...), not the agent's: the agent's
          environment holds the secrets its credentials name (password_env)
    working directory: a new temporary directory of its own (also its TMPDIR / TEMP), never
          the agent's cwd or data_dir; removed when the script has ended
    run_as_user (POSIX, agent started as root): the script's uid, gid and no supplementary
          groups, so it cannot read the agent's files or /proc/<agent pid>/environ
    stdout and stderr read concurrently, at most _AHEAD chunks ahead of the record stream;
          a full stream stops the reads and the script blocks on its pipe
    timeout or cancel: TERM to the process group (Windows: taskkill /T), KILL 2 s later
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bridgehead.plugins.powershell.params import PowershellParams, PowershellProfile, encoded_command
from bridgehead.plugins.ssh import CommandOutput
from bridgehead.sdk import JobContext, SourceError

_READ_BYTES = 64 * 1024
_AHEAD = 8
_KILL_AFTER_S = 2.0
# Windows refuses a command line over 32,767 characters.
_WINDOWS_MAX_COMMAND_LINE = 32_000
_POSIX_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "USER", "LOGNAME", "TZ")
_WINDOWS_ENV = (
    "SYSTEMROOT", "WINDIR", "SYSTEMDRIVE", "PATH", "PATHEXT", "COMSPEC", "TEMP", "TMP", "USERPROFILE",
    "USERNAME", "USERDOMAIN", "COMPUTERNAME", "APPDATA", "LOCALAPPDATA", "PROGRAMDATA", "PROGRAMFILES",
    "PROGRAMFILES(X86)", "PROGRAMW6432", "COMMONPROGRAMFILES", "COMMONPROGRAMFILES(X86)", "PSMODULEPATH",
    "NUMBER_OF_PROCESSORS", "PROCESSOR_ARCHITECTURE", "OS",
)  # fmt: skip


def script_environment() -> dict[str, str]:
    names = _WINDOWS_ENV if sys.platform == "win32" else _POSIX_ENV
    wanted = {n.upper() for n in names}
    return {k: v for k, v in os.environ.items() if k.upper() in wanted}


class LocalScripts:
    """Scripts as child processes, at most ``max_sessions`` at once per connection profile."""

    def __init__(self) -> None:
        self._slots: dict[str, asyncio.Semaphore] = {}

    async def run(self, ctx: JobContext[PowershellProfile], params: PowershellParams, output: CommandOutput) -> None:
        profile = ctx.profile
        slots = self._slots.setdefault(params.connection, asyncio.Semaphore(profile.max_sessions))
        argv = [profile.executable, "-NoProfile", "-NonInteractive", "-EncodedCommand"]
        argv.append(encoded_command(params.script_text(), params.output))
        if sys.platform == "win32" and len(subprocess.list2cmdline(argv)) > _WINDOWS_MAX_COMMAND_LINE:
            raise SourceError(
                f"the script is too long for a Windows command line once encoded "
                f"({len(argv[-1]):,} characters; Windows takes 32,767)",
                code="invalid_params",
            )
        limit = min(params.timeout_s or profile.timeout_s, profile.timeout_s)
        async with slots, _workdir(profile.run_as_user) as (workdir, account):
            process = await _spawn(argv, profile.executable, workdir, account)
            try:
                async with asyncio.timeout(limit):
                    await _pump(process, output)
                    exit_code = await process.wait()
            except TimeoutError:
                await _end(process)
                raise SourceError(
                    f"the script ran past its timeout of {limit:g} s and was stopped (TERM, then KILL)",
                    code="command_timeout",
                ) from None
            except BaseException:
                await _end(process)
                raise
        await output.finish(exit_code)


@contextlib.asynccontextmanager
async def _workdir(user: str | None) -> AsyncIterator[tuple[str, Account | None]]:
    """The script's own working directory, new and empty (not the agent's cwd or data_dir,
    whose journal and spool hold other jobs' data), removed with whatever the script left;
    owned by ``user`` when the script runs as another account."""
    account = _account(user) if user is not None else None
    workdir = tempfile.mkdtemp(prefix="bridgehead-script-")
    try:
        if account is not None:
            os.chown(workdir, account.uid, account.gid)
        yield workdir, account
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str


def _account(name: str) -> Account:
    if sys.platform == "win32":
        raise SourceError(
            "run_as_user is for POSIX agents (on Windows, run the service as that account)", code="invalid_profile"
        )
    import pwd  # noqa: PLC0415 - POSIX only

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise SourceError(f"run_as_user: no account {name!r} on this machine", code="invalid_profile") from None
    if os.geteuid() != 0:
        raise SourceError(
            f"run_as_user = {name!r} needs the agent to start as root (it runs as uid {os.geteuid()})",
            code="invalid_profile",
        )
    return Account(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, home=entry.pw_dir)


async def _spawn(argv: list[str], executable: str, workdir: str, account: Account | None) -> asyncio.subprocess.Process:
    env = script_environment()
    # Temporary files go to the script's own directory, removed after it.
    env.update({"TMPDIR": workdir} if sys.platform != "win32" else {"TEMP": workdir, "TMP": workdir})
    as_user: dict[str, Any] = {}
    if account is not None:
        env.update({"HOME": account.home, "USER": account.name, "LOGNAME": account.name})
        # Its own uid and gid, and none of the agent's supplementary groups.
        as_user = {"user": account.uid, "group": account.gid, "extra_groups": []}
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=workdir,
            **as_user,
            # Its own process group (POSIX) / console group (Windows): a stop reaches the
            # script's children too, and the agent's own signals do not reach the script.
            start_new_session=sys.platform != "win32",
            creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
        )
    except FileNotFoundError:
        raise SourceError(
            f"PowerShell executable {executable!r} is not on this agent's machine "
            '(install PowerShell, or set the profile\'s executable, say "powershell.exe")',
            code="invalid_profile",
        ) from None
    except PermissionError as exc:
        raise SourceError(f"cannot run {executable!r}: {exc.strerror}", code="invalid_profile") from None


async def _pump(process: asyncio.subprocess.Process, output: CommandOutput) -> None:
    chunks: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(_AHEAD)

    async def reader(stream: str, pipe: asyncio.StreamReader | None) -> None:
        assert pipe is not None  # noqa: S101 - spawned with PIPE
        while data := await pipe.read(_READ_BYTES):
            await chunks.put((stream, data))
        await chunks.put((stream, b""))

    readers = [
        asyncio.ensure_future(reader("stdout", process.stdout)),
        asyncio.ensure_future(reader("stderr", process.stderr)),
    ]
    try:
        open_streams = 2
        while open_streams:
            stream, data = await chunks.get()
            if not data:
                open_streams -= 1
                continue
            await output.add(stream, data)
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def _end(process: asyncio.subprocess.Process) -> None:
    """TERM (the whole group), KILL after _KILL_AFTER_S; waits until the process is gone."""
    if process.returncode is not None:
        return
    _signal(process, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), _KILL_AFTER_S)
    except TimeoutError:
        _signal(process, getattr(signal, "SIGKILL", signal.SIGTERM))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.wait()), 10)


def _signal(process: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        if sys.platform == "win32":
            # UNVERIFIED (no Windows here): taskkill /T ends the script's child processes too;
            # TerminateProcess alone would leave them running.
            subprocess.run(  # noqa: S603 - fixed argv, a pid we spawned
                ["taskkill", "/T", "/F", "/PID", str(process.pid)],  # noqa: S607 - a Windows system tool
                capture_output=True,
                check=False,
                timeout=10,
            )
            return
        os.killpg(process.pid, sig)
