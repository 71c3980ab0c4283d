"""The powershell plugin's ``local`` transport: a real child process on this machine.

PowerShell cannot run on this Linux build machine, so the executable is a STAND-IN (a small
Python script the test writes): it checks its arguments, decodes -EncodedCommand as
PowerShell does (base64 of UTF-16LE) and acts on a few words of the script (below). What is
verified for real: the argv, the encoding round trip, the child's environment, streaming with
backpressure, exit codes, and that a timeout or cancel ends the process and its children.
What is not: PowerShell itself, and the Windows-only code paths (taskkill, the Windows
environment allow-list)."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.counting_sink import CountingSink
from bridgehead_testing.harness import scaled, wait_until_async

from bridgehead.core.errors import JobError
from bridgehead.plugins.powershell import PowershellPlugin
from bridgehead.sdk import JobContext
from bridgehead.sdk.testing import run_plugin

STAND_IN = f"""#!{sys.executable}
# STAND-IN for PowerShell (pwsh / powershell.exe), for tests on a machine without it.
import base64, json, os, subprocess, sys, time
args = sys.argv[1:]
if args[:3] != ["-NoProfile", "-NonInteractive", "-EncodedCommand"] or len(args) != 4:
    sys.exit(f"stand-in pwsh: unexpected arguments {{args!r}}")
script = base64.b64decode(args[3]).decode("utf-16-le")
words = script.split()
if "ConvertTo-Json" in script:
    print(json.dumps([{{"received": script}}, 42, "text"]))
elif words[0] == "Write-Error":
    print(" ".join(words[1:]), file=sys.stderr)
    sys.exit(1)
elif words[0] == "Get-Env":
    print(json.dumps(dict(os.environ)))
elif words[0] == "Write-Big":
    chunk = b"x" * 65536
    for _ in range(int(words[1]) * 16):
        sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    print("done", file=sys.stderr)
elif words[0] == "Start-Sleep":
    child = subprocess.Popen(["sleep", "300"])
    with open(words[2], "w") as f:
        f.write(f"{{os.getpid()}} {{child.pid}}")
    time.sleep(float(words[1]))  # a script that runs long: the condition the tests time out or cancel
else:
    print(script)
sys.exit(3 if "exit 3" in script else 0)
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    path = tmp_path / "pwsh-stand-in"
    path.write_text(STAND_IN)
    path.chmod(0o755)
    return path


async def run(stand_in: Path | str, params: dict[str, Any], **profile: Any) -> list[dict[str, Any]]:
    plugin = PowershellPlugin()
    try:
        return await run_plugin(
            plugin,
            {"connection": "here", **params},
            profile={"transport": "local", "executable": str(stand_in), "allow_scripts": True, **profile},
        )
    finally:
        await plugin.aclose()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has ended all the same.
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
    return bool(stat) and stat.split(") ", 1)[1][0] != "Z"


async def wait_for_pids(path: Path) -> list[int]:
    """The stand-in's pid and its child's, once it has written them."""
    await wait_until_async(lambda: path.exists() and path.read_text(), 10, "the stand-in to start")
    pids = [int(p) for p in path.read_text().split()]
    assert 2 == len(pids), pids  # the premise of "and its children": there is one
    return pids


async def test_text_output_is_one_record_and_the_script_arrives_intact(stand_in: Path) -> None:
    script = "Get-Service | Where-Object { $_.Status -eq 'Running' }  # é 日本 \"quotes\" `backtick`"
    assert [{"exit_code": 0, "stdout": script + "\n", "stderr": ""}] == await run(stand_in, {"script": script})


async def test_json_output_becomes_one_record_per_element(stand_in: Path) -> None:
    records = await run(stand_in, {"script": "Get-Process", "output": "json"})
    assert [{"value": 42}, {"value": "text"}] == records[1:]
    assert "ConvertTo-Json -InputObject @(& {\nGet-Process\n}) -Depth 8 -Compress" == records[0]["received"]


async def test_stderr_and_exit_codes(stand_in: Path) -> None:
    assert [{"exit_code": 1, "stdout": "", "stderr": "it broke\n"}] == await run(
        stand_in, {"script": "Write-Error it broke"}
    )
    assert 3 == (await run(stand_in, {"script": "exit 3"}))[0]["exit_code"]
    with pytest.raises(JobError) as caught:
        await run(stand_in, {"script": "exit 3", "output": "json"})
    assert "script_failed" == caught.value.code


async def test_the_script_does_not_see_the_agents_secrets(stand_in: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Credentials name environment variables (password_env): the agent's environment is not
    # the script's.
    monkeypatch.setenv("HR_DB_PASSWORD", "s3cret-in-the-agent")
    import json  # noqa: PLC0415

    env = json.loads((await run(stand_in, {"script": "Get-Env"}))[0]["stdout"])
    assert "HR_DB_PASSWORD" not in env
    assert os.environ["PATH"] == env["PATH"]


async def test_output_streams_in_bounded_memory(stand_in: Path) -> None:
    plugin = PowershellPlugin()
    mib = 64
    sink = CountingSink()
    ctx: JobContext[Any] = JobContext(
        job_id="j",
        attempt=1,
        profile=plugin.profile_type(
            plugin="powershell", transport="local", executable=str(stand_in), allow_scripts=True
        ),
        credential=None,
        sink=sink,
        deadline=time.monotonic() + scaled(120),
        max_record_bytes=1 << 20,
        logger=logging.getLogger("test"),
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    await plugin.run(ctx, plugin.params_type(connection="here", script=f"Write-Big {mib}"))
    await plugin.aclose()
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    size = mib * 1024 * 1024
    assert {"stdout": size, "stderr": 5} == sink.bytes
    assert {"exit_code": 0, "stdout_bytes": size, "stderr_bytes": 5, "streamed": True} == sink.final
    assert grown_mib < 40, f"peak RSS grew {grown_mib:.0f} MiB for {mib} MiB of output"


async def test_a_timeout_ends_the_script_and_its_children(stand_in: Path, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    started = time.monotonic()
    with pytest.raises(JobError) as caught:
        await run(stand_in, {"script": f"Start-Sleep 300 {pids_file}", "timeout_s": 1})
    assert "command_timeout" == caught.value.code, caught.value.message
    assert time.monotonic() - started < scaled(8)
    pids = await wait_for_pids(pids_file)
    assert [] == [p for p in pids if alive(p)]


async def test_cancel_ends_the_script_and_its_children(stand_in: Path, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    job = asyncio.create_task(run(stand_in, {"script": f"Start-Sleep 300 {pids_file}"}))
    pids = await wait_for_pids(pids_file)
    assert all(alive(p) for p in pids)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await wait_until_async(lambda: not any(alive(p) for p in pids), 5, f"pids {pids} to end")


async def test_a_missing_executable_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JobError) as caught:
        await run(tmp_path / "no-such-pwsh", {"script": "Get-Date"})
    assert "invalid_profile" == caught.value.code
    assert "no-such-pwsh" in caught.value.message and "not on this agent's machine" in caught.value.message


async def test_a_host_is_refused_before_anything_runs(stand_in: Path, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    with pytest.raises(JobError) as caught:
        await run(stand_in, {"script": f"Start-Sleep 300 {pids_file}", "host": "win01"})
    assert "policy_denied" == caught.value.code
    assert not pids_file.exists()
