"""The powershell plugin over a real sshd. PowerShell 7 cannot run on this Linux build machine,
so the interpreter on the server is a STAND-IN (a small Python script, written by the test):
it checks the arguments, decodes -EncodedCommand as PowerShell does (base64 of UTF-16LE) and
prints what it received (as JSON when the script asks for ConvertTo-Json). What is verified for
real: the command line, the encoding round trip, the SSH path, and turning JSON output into
records. What is not: PowerShell itself."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from bridgehead_testing.sshd import Sshd, TestUser, make_client_key

from bridgehead.core.errors import JobError
from bridgehead.plugins.powershell import PowershellPlugin
from bridgehead.plugins.powershell.call import call_script
from bridgehead.plugins.powershell.params import PowershellProfile
from bridgehead.sdk import Credential
from bridgehead.sdk.testing import run_plugin

STAND_IN = r"""#!/usr/bin/env python3
# STAND-IN for PowerShell 7 (pwsh), for tests on a machine without it.
import base64, json, sys
args = sys.argv[1:]
if args[:3] != ["-NoProfile", "-NonInteractive", "-EncodedCommand"] or len(args) != 4:
    sys.exit(f"stand-in pwsh: unexpected arguments {args!r}")
script = base64.b64decode(args[3]).decode("utf-16-le")
if "ConvertTo-Json" in script:
    print(json.dumps([{"received": script}, 42, "text"]))
else:
    print(script)
sys.exit(3 if "exit 3" in script else 0)
"""


@pytest.fixture
def stand_in(test_user: TestUser, tmp_path: Path) -> Iterator[Path]:
    path = test_user.home / f"pwsh-stand-in-{tmp_path.name}"
    path.write_text(STAND_IN)
    path.chmod(0o755)
    os.chown(path, test_user.uid, test_user.gid)
    yield path
    path.unlink()


async def run(sshd: Sshd, test_user: TestUser, tmp_path: Path, stand_in: Path, params: dict[str, Any]) -> Any:
    private, public = make_client_key(tmp_path / f"id_{len(list(tmp_path.iterdir()))}")
    sshd.add_authorized_key(test_user.name, public)
    profile = {
        "host": sshd.host,
        "port": sshd.port,
        "host_key": sshd.host_key_fingerprint(),
        "executable": str(stand_in),
        "credential": "c",
        "allow_scripts": True,
    }
    plugin = PowershellPlugin()
    try:
        return await run_plugin(
            plugin,
            {"connection": "win", **params},
            profile=profile,
            credential=Credential(username=test_user.name, private_key_file=str(private)),
        )
    finally:
        await plugin.aclose()


async def test_text_output_is_the_ssh_record_and_the_script_arrives_intact(
    sshd: Sshd, test_user: TestUser, tmp_path: Path, stand_in: Path
) -> None:
    script = "Get-Service | Where-Object { $_.Status -eq 'Running' }  # é 日本 \"quotes\" `backtick`"
    records = await run(sshd, test_user, tmp_path, stand_in, {"script": script})
    assert [{"exit_code": 0, "stdout": script + "\n", "stderr": ""}] == records


async def test_json_output_becomes_one_record_per_element(
    sshd: Sshd, test_user: TestUser, tmp_path: Path, stand_in: Path
) -> None:
    records = await run(sshd, test_user, tmp_path, stand_in, {"script": "Get-Process", "output": "json"})
    assert [{"value": 42}, {"value": "text"}] == records[1:]
    received = records[0]["received"]
    assert received == "ConvertTo-Json -InputObject @(& {\nGet-Process\n}) -Depth 8 -Compress"


async def test_a_failing_json_script_fails_the_job(
    sshd: Sshd, test_user: TestUser, tmp_path: Path, stand_in: Path
) -> None:
    with pytest.raises(JobError) as caught:
        await run(sshd, test_user, tmp_path, stand_in, {"script": "exit 3", "output": "json"})
    assert "script_failed" == caught.value.code


def profile(**keys: Any) -> PowershellProfile:
    return msgspec.convert({"plugin": "powershell", **keys}, PowershellProfile)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"transport": "psrp", "host": "win01", "host_key": "SHA256:" + "A" * 43}, "host_key: only for transport"),
        ({"transport": "psrp", "host": "win01", "jump": "bastion"}, "jump: only for transport"),
        ({"transport": "psrp"}, "exactly one of host or hosts"),
        ({"transport": "psrp", "host": "win01", "ssl": False, "auth": "basic"}, "password in clear"),
        ({"transport": "psrp", "host": "win01", "ssl": False, "encryption": "never"}, "in clear"),
        ({"transport": "local", "host": "win01"}, "agent's own machine"),
        ({"transport": "local", "executable": "pwsh; rm -rf /"}, "shell characters"),
        ({"transport": "winrm", "host": "win01"}, "transport"),
    ],
)
def test_profiles_that_do_not_hold_together_are_refused(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        profile(**keys)


def test_psrp_ports_follow_ssl_unless_given() -> None:
    assert 5986 == profile(transport="psrp", host="win01").winrm_port()
    assert 5985 == profile(transport="psrp", host="win01", ssl=False).winrm_port()
    assert 15986 == profile(transport="psrp", host="win01", port=15986).winrm_port()
    assert "localhost" == profile(transport="local").target(None)
    with pytest.raises(ValueError, match="agent's own machine"):
        profile(transport="local").target("win01")


async def test_a_structured_call_arrives_as_the_call_script(
    sshd: Sshd, test_user: TestUser, tmp_path: Path, stand_in: Path
) -> None:
    """Over SSH a call travels as the encoded call script, its hostile value base64 inside it."""
    parameters = {"Name": "'; Stop-Computer; '"}
    records = await run(sshd, test_user, tmp_path, stand_in, {"command": "Get-Service", "parameters": parameters})
    assert [{"exit_code": 0, "stdout": call_script("Get-Service", parameters) + "\n", "stderr": ""}] == records
