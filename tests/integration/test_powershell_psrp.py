"""The powershell plugin's ``psrp`` transport (WinRM / PowerShell Remoting, pypsrp).

No WinRM server can run on this Linux build machine. Two kinds of test, therefore:

- real pypsrp against real loopback servers, for what happens before PowerShell is reached:
  a port where nothing listens, a TLS server whose certificate the profile's CA does (or
  does not) vouch for, and a WinRM endpoint that refuses the credential;
- the pipeline path (output lines, error records, JSON, streaming, stop on timeout and
  cancel, reuse of warm pools, a pool that breaks) against a STAND-IN for pypsrp's
  ``RunspacePool`` and ``PowerShell`` (``StandInPool``, ``StandInPipeline`` below), a mock
  the brief allows only because no real server can run here.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from bridgehead_testing.counting_sink import CountingSink
from bridgehead_testing.harness import free_port, scaled, wait_until_async
from bridgehead_testing.pki import Pki, write_test_pki

from bridgehead.core.errors import JobError
from bridgehead.plugins.powershell import PowershellPlugin
from bridgehead.plugins.powershell.psrp import PsrpSessions
from bridgehead.sdk import Credential, JobContext
from bridgehead.sdk.testing import run_plugin

PASSWORD = "winrm-pass-never-shown"  # noqa: S105 - a test credential, checked to stay out of errors
CREDENTIAL = Credential(username="CORP\\svc", password=PASSWORD)


def psrp_profile(**keys: Any) -> dict[str, Any]:
    return {"transport": "psrp", "host": "127.0.0.1", "credential": "c", "allow_scripts": True, **keys}


async def run(plugin: PowershellPlugin, params: dict[str, Any], **profile: Any) -> list[dict[str, Any]]:
    return await run_plugin(
        plugin, {"connection": "win", **params}, profile=psrp_profile(**profile), credential=CREDENTIAL
    )


async def failure(plugin: PowershellPlugin, params: dict[str, Any], **profile: Any) -> JobError:
    with pytest.raises(JobError) as caught:
        await run(plugin, params, **profile)
    assert PASSWORD not in caught.value.message
    return caught.value


# --- real pypsrp, real loopback servers ------------------------------------------------------


class _RefusingWinRM(http.server.BaseHTTPRequestHandler):
    """A WinRM endpoint that refuses every credential, as a real one does a wrong password."""

    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append(f"{self.path} {self.headers.get('Authorization', '').split(' ')[0]}")
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="WSMAN"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return write_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def winrm_tls(pki: Pki) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingWinRM)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _RefusingWinRM.seen.clear()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def test_nothing_listening_is_source_unavailable() -> None:
    plugin = PowershellPlugin()
    port = free_port()
    try:
        error = await failure(plugin, {"script": "Get-Date"}, port=port, connect_timeout_s=5)
    finally:
        await plugin.aclose()
    assert "source_unavailable" == error.code, error.message
    assert f"https://127.0.0.1:{port}/wsman" in error.message


async def test_a_refused_credential_is_auth_failed(winrm_tls: int, pki: Pki) -> None:
    plugin = PowershellPlugin()
    try:
        error = await failure(plugin, {"script": "Get-Date"}, port=winrm_tls, auth="basic", ca_file=str(pki.ca_file))
    finally:
        await plugin.aclose()
    assert "auth_failed" == error.code, error.message
    assert "CORP\\\\svc" in error.message  # the user's name, as repr() shows it
    assert ["/wsman Basic"] == _RefusingWinRM.seen[:1]  # pypsrp did reach the server, over TLS


async def test_a_certificate_from_another_ca_is_tls_failed_and_nothing_is_sent(winrm_tls: int, pki: Pki) -> None:
    plugin = PowershellPlugin()
    try:
        error = await failure(
            plugin, {"script": "Get-Date"}, port=winrm_tls, auth="basic", ca_file=str(pki.other_ca_file)
        )
    finally:
        await plugin.aclose()
    assert "tls_failed" == error.code, error.message
    assert "certificate" in error.message.lower()
    assert [] == _RefusingWinRM.seen


# --- the pipeline, against a stand-in for pypsrp ---------------------------------------------


class StandInErrorRecord:
    """STAND-IN for pypsrp's ErrorRecord: str() is the record's ToString, as pypsrp gives it."""

    details_message = None

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


class StandInPool:
    """STAND-IN for pypsrp.powershell.RunspacePool (no WinRM server can run here)."""

    def __init__(self) -> None:
        self.closed = False
        self.running = 0

    def close(self) -> None:
        self.closed = True


class StandInPipeline:
    """STAND-IN for pypsrp.powershell.PowerShell. Acts on the script's first word:
    ``Lines N`` writes N lines over several polls; ``Error MSG`` writes an error record;
    ``Sleep`` runs until stopped; ``Break`` loses the connection on the first poll;
    anything else echoes the script. pypsrp's state numbers: 1 running, 3 stopped, 4 done."""

    made: list[StandInPipeline] = []

    def __init__(self, pool: StandInPool) -> None:
        self.pool = pool
        self.state = 0
        self.had_errors = False
        self.output: list[Any] = []
        self.streams = SimpleNamespace(error=[])
        self.commands: list[str] = []
        self.stopped = False
        self.most_held = 0  # most output items waiting at a poll: what the plugin keeps
        self._left = 0
        StandInPipeline.made.append(self)

    def add_script(self, script: str) -> StandInPipeline:
        self.commands.append(script)
        return self

    def add_cmdlet(self, cmdlet: str) -> StandInPipeline:
        self.commands.append(cmdlet)
        return self

    def add_parameter(self, name: str, value: Any = None) -> StandInPipeline:
        self.commands.append(f"-{name}")
        return self

    def begin_invoke(self) -> None:
        self.state = 1
        self.pool.running += 1
        assert self.pool.running == 1, "two pipelines at once on one pool"
        words = self.commands[0].split()
        self._left = int(words[1]) if words[0] == "Lines" else 0

    def poll_invoke(self, timeout: int | None = None) -> None:
        self.most_held = max(self.most_held, len(self.output))
        script = self.commands[0]
        word = script.split()[0]
        if word == "Sleep":
            time.sleep(0.05)  # a slow server: one poll's wait, the condition under test, not a sync
            return
        if word == "Break":
            raise ConnectionResetError("the WinRM connection was reset")
        if word == "Lines":
            batch = min(self._left, 5000)
            self.output += [f"line {self._left - i:07d} " + "x" * 80 for i in range(batch)]
            self._left -= batch
            if self._left:
                return
        elif word == "Error":
            self.streams.error.append(StandInErrorRecord(script[6:]))
        elif script.startswith("ConvertTo-Json"):
            self.output.append(json.dumps([{"received": script}, 42]))
        else:
            self.output.append(script)
        self._done(4)

    def stop(self) -> None:
        self.stopped = True
        self._done(3)

    def _done(self, state: int) -> None:
        if self.state == 1:
            self.pool.running -= 1
        self.state = state


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[PowershellPlugin, list[StandInPool]]]:
    plugin = PowershellPlugin()
    pools: list[StandInPool] = []

    def open_pool(profile: Any, credential: Credential | None, host: str) -> StandInPool:
        assert credential == CREDENTIAL and host == "127.0.0.1"
        pools.append(StandInPool())
        return pools[-1]

    plugin.psrp = PsrpSessions(plugin._executor, open_pool=open_pool, new_pipeline=StandInPipeline)  # type: ignore[arg-type]
    StandInPipeline.made.clear()
    yield plugin, pools
    await plugin.aclose()


async def test_text_output_is_the_ssh_record_from_out_string(
    stand_in: tuple[PowershellPlugin, list[StandInPool]],
) -> None:
    plugin, _ = stand_in
    assert [{"exit_code": 0, "stdout": "Get-Date\n", "stderr": ""}] == await run(plugin, {"script": "Get-Date"})
    assert ["Get-Date", "Out-String", "-Stream"] == StandInPipeline.made[0].commands


async def test_error_records_are_stderr_and_exit_code_1(stand_in: tuple[PowershellPlugin, list[StandInPool]]) -> None:
    plugin, _ = stand_in
    records = await run(plugin, {"script": "Error access denied to C:\\secret"})
    assert [{"exit_code": 1, "stdout": "", "stderr": "access denied to C:\\secret\n"}] == records


async def test_json_output_becomes_records(stand_in: tuple[PowershellPlugin, list[StandInPool]]) -> None:
    plugin, _ = stand_in
    records = await run(plugin, {"script": "Get-Service", "output": "json"})
    assert {"value": 42} == records[1]
    assert "ConvertTo-Json -InputObject @(& {\nGet-Service\n}) -Depth 8 -Compress" == records[0]["received"]
    assert ["ConvertTo-Json"] == [c.split()[0] for c in StandInPipeline.made[0].commands]  # no Out-String


async def test_long_output_streams_and_is_taken_every_poll(
    stand_in: tuple[PowershellPlugin, list[StandInPool]],
) -> None:
    plugin, _ = stand_in
    lines = 200_000
    sink = CountingSink()
    ctx: JobContext[Any] = JobContext(
        job_id="j",
        attempt=1,
        profile=plugin.profile_type(plugin="powershell", **psrp_profile()),
        credential=CREDENTIAL,
        sink=sink,
        deadline=time.monotonic() + scaled(120),
        max_record_bytes=1 << 20,
        logger=logging.getLogger("test"),
    )
    await plugin.run(ctx, plugin.params_type(connection="win", script=f"Lines {lines}"))
    size = lines * len("line 0000000 " + "x" * 80 + "\n")
    assert {"stdout": size, "stderr": 0} == sink.bytes
    assert {"exit_code": 0, "stdout_bytes": size, "stderr_bytes": 0, "streamed": True} == sink.final
    assert 0 == StandInPipeline.made[0].most_held  # every poll's output was taken before the next


async def test_twenty_jobs_reuse_one_runspace_pool(stand_in: tuple[PowershellPlugin, list[StandInPool]]) -> None:
    plugin, pools = stand_in
    for i in range(20):
        assert f"Write-Output {i}\n" == (await run(plugin, {"script": f"Write-Output {i}"}))[0]["stdout"]
    assert 1 == len(pools) == plugin.psrp.opened()


async def test_max_sessions_bounds_pipelines_at_once(stand_in: tuple[PowershellPlugin, list[StandInPool]]) -> None:
    plugin, pools = stand_in
    jobs = [run(plugin, {"script": f"Lines {20_000 + i}"}, max_sessions=2) for i in range(6)]
    results = await asyncio.gather(*jobs)
    assert all(r[-1]["exit_code"] == 0 for r in results)
    assert len(pools) == 2  # each pool ran one pipeline at a time (StandInPipeline asserts it)


async def test_a_timeout_stops_the_remote_pipeline(stand_in: tuple[PowershellPlugin, list[StandInPool]]) -> None:
    plugin, pools = stand_in
    started = time.monotonic()
    error = await failure(plugin, {"script": "Sleep", "timeout_s": 1})
    assert "command_timeout" == error.code, error.message
    assert time.monotonic() - started < scaled(6)
    assert StandInPipeline.made[0].stopped
    # A stopped pipeline leaves a good pool: the next job runs on it (a pool dropped after the
    # timeout would be closed in the background, and a new one opened for that job).
    assert "Write-Output 1\n" == (await run(plugin, {"script": "Write-Output 1"}))[0]["stdout"]
    assert 1 == len(pools) and not pools[0].closed


async def test_cancel_stops_the_remote_pipeline(stand_in: tuple[PowershellPlugin, list[StandInPool]]) -> None:
    plugin, _ = stand_in
    job = asyncio.create_task(run(plugin, {"script": "Sleep"}))
    # Cancel once the pipeline is invoked (pypsrp's state 1, running) and not before: the
    # point is to stop a pipeline already running on the server.
    await wait_until_async(lambda: StandInPipeline.made and StandInPipeline.made[0].state == 1, 10, "the pipeline")
    assert False is StandInPipeline.made[0].stopped
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert StandInPipeline.made[0].stopped


async def test_a_broken_connection_is_source_unavailable_and_the_pool_replaced(
    stand_in: tuple[PowershellPlugin, list[StandInPool]],
) -> None:
    plugin, pools = stand_in
    error = await failure(plugin, {"script": "Break"})
    assert "source_unavailable" == error.code
    assert "reset" in error.message
    assert 0 == (await run(plugin, {"script": "Get-Date"}))[0]["exit_code"]
    assert 2 == len(pools)
    assert pools[0].closed and not pools[1].closed


def test_pool_of_the_stand_in_is_closed_on_aclose(tmp_path: Path) -> None:
    closed: list[StandInPool] = []

    class ClosingPool(StandInPool):
        def close(self) -> None:
            closed.append(self)

    async def scenario() -> None:
        plugin = PowershellPlugin()
        plugin.psrp = PsrpSessions(
            plugin._executor,
            open_pool=lambda *_: ClosingPool(),
            new_pipeline=StandInPipeline,  # type: ignore[arg-type]
        )
        await run(plugin, {"script": "Get-Date"})
        assert [] == closed
        await plugin.aclose()

    asyncio.run(scenario())
    assert 1 == len(closed)
