"""Commands that mean what the allow-list says, tried as an attacker would: ssh jobs against a
real sshd (what ran is read ON THE SERVER: the allowed program records its argv, and an
injected command would create a marker file), the CLI's check of a profile with a shell and a
list, and powershell jobs (structured calls, free scripts, the local child's environment and
identity) with a STAND-IN interpreter, since PowerShell cannot run on this Linux machine."""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from bridgehead_testing.sshd import Sshd, TestUser, make_client_key

from bridgehead.core.errors import JobError
from bridgehead.plugins.powershell import PowershellPlugin
from bridgehead.plugins.powershell.psrp import PsrpSessions
from bridgehead.plugins.ssh import SshPlugin
from bridgehead.sdk import Credential
from bridgehead.sdk.testing import run_plugin

RECORDER = """#!/usr/bin/env python3
# The allowed program: appends its argv (without itself) as one JSON line to the file beside it.
import json, sys
with open(sys.argv[0] + ".argv", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


@dataclass
class Server:
    """The sshd, a login for it, the allowed program installed there, and the marker file."""

    sshd: Sshd
    key: Credential
    recorder: str  # the allowed program's path on the server
    pwned: Path  # created only if an injected command ran

    def runs(self) -> list[list[str]]:
        """Every argv the recorder was run with, in order, read from the server's disk."""
        log = Path(self.recorder + ".argv")
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def profile(self, **keys: Any) -> dict[str, Any]:
        return {
            "host": self.sshd.host,
            "port": self.sshd.port,
            "host_key": self.sshd.host_key_fingerprint(),
            "credential": "c",
            **keys,
        }

    def connections(self) -> int:
        return self.sshd.log_tail(1000).count("Connection from")


@pytest.fixture
def server(sshd: Sshd, test_user: TestUser, tmp_path: Path) -> Iterator[Server]:
    private, public = make_client_key(tmp_path / "id_ed25519")
    sshd.add_authorized_key(test_user.name, public)
    tag = uuid.uuid4().hex[:12]
    recorder = test_user.home / f"bh-recorder-{tag}"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    os.chown(recorder, test_user.uid, test_user.gid)
    pwned = Path(f"/tmp/PWNED-{tag}")  # noqa: S108 - the place an attacker would write
    yield Server(
        sshd=sshd,
        key=Credential(username=test_user.name, private_key_file=str(private)),
        recorder=str(recorder),
        pwned=pwned,
    )
    for path in (recorder, Path(f"{recorder}.argv"), pwned):
        path.unlink(missing_ok=True)


async def ssh(server: Server, profile: dict[str, Any], params: dict[str, Any]) -> list[dict[str, Any]]:
    plugin = SshPlugin()
    try:
        return await run_plugin(
            plugin, {"connection": "box", **params}, profile=server.profile(**profile), credential=server.key
        )
    finally:
        await plugin.aclose()


async def refused(server: Server, profile: dict[str, Any], params: dict[str, Any]) -> str:
    with pytest.raises(JobError) as caught:
        await ssh(server, profile, params)
    return caught.value.code


def injections(pwned: Path) -> list[str]:
    """Arguments that a shell reading them would turn into ``touch <pwned>``."""
    return [
        f"; touch {pwned}",
        f"&& touch {pwned}",
        f"|| touch {pwned}",
        f"| touch {pwned}",
        f"`touch {pwned}`",
        f"$(touch {pwned})",
        f"a\ntouch {pwned}",
        f"'; touch {pwned}; '",
        f'"; touch {pwned}; "',
        f"> {pwned}",
        f"$(IFS=_;cmd=touch_{pwned};$cmd)",
        "*",
        "~root/*",
        "$HOME",
        "\\",
        "",
    ]


# --- ssh: with an allow-list, only the allowed program runs, with literal arguments -----------


async def test_hostile_arguments_in_a_list_reach_the_allowed_program_as_literals(server: Server) -> None:
    """Each hostile argument arrives byte for byte; no injected command runs on the server."""
    profile = {"allowed_commands": [f"{server.recorder} *"]}
    hostile = injections(server.pwned)
    for argument in hostile:
        records = await ssh(server, profile, {"command": [server.recorder, argument, "end"]})
        assert 0 == records[0]["exit_code"], records
    assert [[argument, "end"] for argument in hostile] == server.runs()
    assert not server.pwned.exists()


async def test_hostile_text_in_a_string_command_is_split_not_interpreted(server: Server) -> None:
    """A string is split as a POSIX shell would, and its pieces reach the program as literals."""
    profile = {"allowed_commands": [f"{server.recorder} *"]}
    rec, pwned = server.recorder, server.pwned
    commands = {
        f"{rec} a; touch {pwned}": ["a;", "touch", str(pwned)],
        f"{rec} a && touch {pwned}": ["a", "&&", "touch", str(pwned)],
        f"{rec} a | touch {pwned}": ["a", "|", "touch", str(pwned)],
        f"{rec} `touch {pwned}`": ["`touch", f"{pwned}`"],
        f"{rec} $(touch {pwned})": ["$(touch", f"{pwned})"],
        f"{rec} a\ntouch {pwned}": ["a", "touch", str(pwned)],
        f"{rec} '; touch {pwned}; '": [f"; touch {pwned}; "],
        f"{rec} > {pwned}": [">", str(pwned)],
        f"{rec} * ~ $HOME": ["*", "~", "$HOME"],
    }
    for command in commands:
        assert 0 == (await ssh(server, profile, {"command": command}))[0]["exit_code"]
    assert list(commands.values()) == server.runs()
    assert not server.pwned.exists()


async def test_commands_outside_the_list_are_refused_before_connecting(server: Server) -> None:
    """Another program, however it hides behind the allowed one, never reaches the server."""
    profile = {"allowed_commands": [f"{server.recorder} *", "uptime"]}
    rec, pwned = server.recorder, server.pwned
    assert 0 == (await ssh(server, profile, {"command": ["uptime"]}))[0]["exit_code"]  # the premise: it connects
    before = server.connections()
    denied = [
        f"touch {pwned}",
        ["touch", str(pwned)],
        f"sh -c 'touch {pwned}'",
        f"{rec};touch {pwned}",
        f"{rec}`touch {pwned}`",
        [f"{rec}; touch {pwned}"],
        f"uptime; touch {pwned}",
        ["uptime", f"; touch {pwned}"],
        f"env {rec} x",
    ]
    codes = [await refused(server, profile, {"command": command}) for command in denied]
    assert ["policy_denied"] * len(denied) == codes
    assert (before, [], False) == (server.connections(), server.runs(), server.pwned.exists())


async def test_nul_and_unsplittable_commands_are_invalid(server: Server) -> None:
    """A NUL in an argument, an unclosed quote or a dangling backslash: invalid_params, nothing runs."""
    profile = {"allowed_commands": [f"{server.recorder} *"]}
    rec, pwned = server.recorder, server.pwned
    bad = [[rec, f"a\x00; touch {pwned}"], f"{rec} a\x00b", f"{rec} 'a; touch {pwned}", f"{rec} a\\"]
    codes = [await refused(server, profile, {"command": command}) for command in bad]
    assert ["invalid_params"] * len(bad) == codes
    assert ([], False) == (server.runs(), server.pwned.exists())


async def test_with_an_allow_list_env_needs_allowed_env(server: Server) -> None:
    """A job's variables could run code (LD_PRELOAD, BASH_ENV): refused unless allowed_env names them."""
    params = {"command": [server.recorder], "env": {"BH_MODE": "x"}}
    assert "policy_denied" == await refused(server, {"allowed_commands": [server.recorder]}, params)
    opened = {"allowed_commands": [server.recorder], "allowed_env": ["BH_*"]}
    assert 0 == (await ssh(server, opened, params))[0]["exit_code"]
    assert [[]] == server.runs()


async def test_sudo_runs_the_argv_itself_not_a_shell(server: Server, test_user: TestUser) -> None:
    """Under sudo the argv runs as it is (no sh -c): hostile arguments stay literal, as root."""
    profile = {"allowed_commands": [f"{server.recorder} *", "id -u"]}
    password = Credential(username=test_user.name, password=test_user.password)
    outputs = []
    plugin = SshPlugin()
    try:
        for command in (["id", "-u"], [server.recorder, f"; touch {server.pwned}", f"$(touch {server.pwned})"]):
            records = await run_plugin(
                plugin,
                {"connection": "box", "command": command, "sudo": True},
                profile=server.profile(**profile),
                credential=password,
            )
            outputs.append((records[0]["exit_code"], records[0]["stdout"]))
    finally:
        await plugin.aclose()
    assert [(0, "0\n"), (0, "")] == outputs
    assert [[f"; touch {server.pwned}", f"$(touch {server.pwned})"]] == server.runs()
    assert not server.pwned.exists()


# --- ssh: without a list, one program at a time; a shell only with allow_shell -----------------


async def test_without_a_list_a_command_is_one_program_never_a_pipeline(server: Server) -> None:
    """The default: a string is split into argv and quoted, so ; and | are echo's arguments."""
    records = await ssh(server, {}, {"command": f"echo a; touch {server.pwned} | cat"})
    assert [{"exit_code": 0, "stdout": f"a; touch {server.pwned} | cat\n", "stderr": ""}] == records
    assert not server.pwned.exists()


async def test_allow_shell_runs_a_pipeline(server: Server) -> None:
    """With allow_shell a string is a shell line; a list is still quoted."""
    shell = {"allow_shell": True}
    assert "b\n" == (await ssh(server, shell, {"command": "echo a | tr a b"}))[0]["stdout"]
    assert "a | b\n" == (await ssh(server, shell, {"command": ["echo", "a | b"]}))[0]["stdout"]


def test_check_refuses_a_profile_with_a_shell_and_a_list(tmp_path: Path) -> None:
    """bridgehead-agent check exits 2 and names both keys."""
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[agent]\nname = "a1"\ndata_dir = "{tmp_path / "data"}"\n\n[control]\nurl = "https://control.example.net"\n\n'
        '[connections.box]\nplugin = "ssh"\nhost = "h1"\nhost_key = "SHA256:' + "A" * 43 + '"\n'
        'allow_shell = true\nallowed_commands = ["uptime"]\n'
    )
    agent = Path(sys.executable).with_name("bridgehead-agent")
    done = subprocess.run([str(agent), "check", "--config", str(config)], capture_output=True, text=True, check=False)
    assert 2 == done.returncode, done.stdout + done.stderr
    assert "connections.box" in done.stderr
    assert "allow_shell = true cannot go with allowed_commands" in done.stderr
    config.write_text(config.read_text().replace("allow_shell = true\n", ""))
    done = subprocess.run([str(agent), "check", "--config", str(config)], capture_output=True, text=True, check=False)
    assert 0 == done.returncode, done.stderr  # the premise: the same profile without the shell loads


# --- powershell: structured calls, free scripts ---------------------------------------------

# A STAND-IN for pwsh: it accepts only the exact script a structured call becomes (every line
# of it must match the grammar below, or it exits 9), evaluates the literals as PowerShell
# would, and prints the call as JSON. A free script is printed as it came. Every start is
# logged in the file named by argv[0] + ".runs".
PS_STAND_IN = r"""#!{python}
import base64, json, os, re, sys
with open(sys.argv[0] + ".runs", "a") as f:
    f.write("run\n")
args = sys.argv[1:]
if args[:3] != ["-NoProfile", "-NonInteractive", "-EncodedCommand"] or len(args) != 4:
    sys.exit(f"stand-in pwsh: unexpected arguments {args!r}")
script = base64.b64decode(args[3]).decode("utf-16-le")
if not script.startswith("$bhParameters = @{}\n"):
    print(json.dumps({"script": script}))
    sys.exit(0)
STRING = r"\[System\.Text\.Encoding\]::UTF8\.GetString\(\[System\.Convert\]::FromBase64String\('([A-Za-z0-9+/=]*)'\)\)"
SCALAR = rf"(?:{STRING}|\$true|\$false|-?\d+|\[double\]'[-+.e\d]+')"
def value(text):
    if text.startswith("@("):
        inner = text[2:-1]
        return [value(m.group(0)) for m in re.finditer(SCALAR, inner)]
    m = re.fullmatch(STRING, text)
    if m:
        return base64.b64decode(m.group(1)).decode("utf-8")
    if text in ("$true", "$false"):
        return text == "$true"
    if text.startswith("[double]"):
        return float(text[9:-1])
    return int(text)
lines = script.split("\n")
parameters = {}
for line in lines[1:-1]:
    VALUE = rf"{SCALAR}|@\((?:{SCALAR}(?:, {SCALAR})*)?\)"
    m = re.fullmatch(rf"\$bhParameters\['([A-Za-z][A-Za-z0-9]*)'\] = ({VALUE})", line)
    if not m:
        sys.exit(f"stand-in pwsh: a line outside the call grammar: {line!r}")
    parameters[m.group(1)] = value(m.group(2))
m = re.fullmatch(r"([A-Za-z][A-Za-z0-9-]*) @bhParameters", lines[-1])
if not m:
    sys.exit(f"stand-in pwsh: the last line is not a splatted call: {lines[-1]!r}")
print(json.dumps({"command": m.group(1), "parameters": parameters, "cwd": os.getcwd(), "env": dict(os.environ)}))
"""


@pytest.fixture
def ps_stand_in(tmp_path: Path) -> Path:
    path = tmp_path / "pwsh-stand-in"
    path.write_text(PS_STAND_IN.replace("{python}", sys.executable))
    path.chmod(0o755)
    return path


async def ps(stand_in: Path, params: dict[str, Any], **profile: Any) -> list[dict[str, Any]]:
    plugin = PowershellPlugin()
    try:
        return await run_plugin(
            plugin,
            {"connection": "here", **params},
            profile={"transport": "local", "executable": str(stand_in), **profile},
        )
    finally:
        await plugin.aclose()


def stand_in_runs(stand_in: Path) -> int:
    runs = Path(f"{stand_in}.runs")
    return len(runs.read_text().splitlines()) if runs.exists() else 0


HOSTILE_VALUES = [
    "'; Remove-Item -Recurse C:\\ ; '",
    "\u2019; Stop-Computer; \u2018",
    '"; Stop-Computer; "',
    "$(Stop-Computer)",
    "${env:SECRET}",
    "`n Stop-Computer",
    "a\nStop-Computer",
    "@(Stop-Computer)",
    "# comment",
    "*",
    "",
]


async def test_a_structured_call_reaches_powershell_with_its_values_intact(ps_stand_in: Path) -> None:
    """Hostile strings, numbers, booleans and lists arrive as the same values, and the script
    holds nothing but the call (the stand-in refuses any other line)."""
    parameters: dict[str, Any] = {f"P{i}": v for i, v in enumerate(HOSTILE_VALUES)}
    parameters |= {"Count": -42, "Ratio": 0.25, "Force": True, "Names": ["a'b", 7, False, "$(x)"], "Empty": []}
    records = await ps(ps_stand_in, {"command": "Get-Service", "parameters": parameters})
    assert 0 == records[0]["exit_code"], records
    received = json.loads(records[0]["stdout"])
    assert ("Get-Service", parameters) == (received["command"], received["parameters"])


async def test_call_policy_matches_the_command_and_parameter_names(ps_stand_in: Path) -> None:
    """``Get-Service -Name`` allows that call and nothing more; refused calls start no process."""
    profile = {"allowed_commands": ["Get-Service -Name"]}
    records = await ps(ps_stand_in, {"command": "get-service", "parameters": {"name": "spooler"}}, **profile)
    assert {"name": "spooler"} == json.loads(records[0]["stdout"])["parameters"]
    denied: list[dict[str, Any]] = [
        {"command": "Get-Service", "parameters": {"Name": "a", "ComputerName": "b"}},
        {"command": "Stop-Service", "parameters": {"Name": "spooler"}},
        {"command": "Get-Service", "parameters": {"N": "spooler"}},
        {"script": "Get-Service -Name spooler"},
    ]
    for params in denied:
        with pytest.raises(JobError) as caught:
            await ps(ps_stand_in, params, **profile)
        assert "policy_denied" == caught.value.code, params
    assert 1 == stand_in_runs(ps_stand_in)


async def test_a_free_script_needs_allow_scripts(ps_stand_in: Path) -> None:
    """Without allow_scripts a script is refused before any process starts; with it, it runs."""
    with pytest.raises(JobError) as caught:
        await ps(ps_stand_in, {"script": "Get-Date; Stop-Computer"})
    assert ("policy_denied", 0) == (caught.value.code, stand_in_runs(ps_stand_in))
    records = await ps(ps_stand_in, {"script": "Get-Date"}, allow_scripts=True)
    assert {"script": "Get-Date"} == json.loads(records[0]["stdout"])


class _CallPipeline:
    """STAND-IN for pypsrp.powershell.PowerShell (no WinRM server can run here): it records the
    commands and parameters it is given, and outputs them."""

    made: list[_CallPipeline] = []

    def __init__(self, pool: Any) -> None:
        self.state, self.had_errors = 0, False
        self.output: list[Any] = []
        self.streams = SimpleNamespace(error=[])
        self.calls: list[tuple[str, Any]] = []
        _CallPipeline.made.append(self)

    def add_script(self, script: str) -> _CallPipeline:
        self.calls.append(("script", script))
        return self

    def add_cmdlet(self, cmdlet: str) -> _CallPipeline:
        self.calls.append(("cmdlet", cmdlet))
        return self

    def add_parameter(self, name: str, value: Any = None) -> _CallPipeline:
        self.calls.append(("parameter", (name, value)))
        return self

    def begin_invoke(self) -> None:
        self.state = 1

    def poll_invoke(self, timeout: int | None = None) -> None:
        self.output, self.state = ["done"], 4

    def stop(self) -> None:
        self.state = 3


async def test_over_psrp_a_call_is_a_cmdlet_and_parameters_not_text() -> None:
    """The call goes as add_cmdlet and add_parameter with the values as they are: no script."""
    plugin = PowershellPlugin()
    pool = SimpleNamespace(close=lambda: None)  # STAND-IN for pypsrp's RunspacePool
    plugin.psrp = PsrpSessions(plugin._executor, open_pool=lambda *_: pool, new_pipeline=_CallPipeline)  # type: ignore[arg-type]
    _CallPipeline.made.clear()
    value = "'; Stop-Computer; '"
    try:
        await run_plugin(
            plugin,
            {"connection": "win", "command": "Get-Service", "parameters": {"Name": [value, 1]}},
            profile={"transport": "psrp", "host": "127.0.0.1", "allowed_commands": ["Get-Service -Name"]},
            credential=Credential(username="svc", password="pw-for-the-stand-in"),  # noqa: S106
        )
    finally:
        await plugin.aclose()
    expected = [
        ("cmdlet", "Get-Service"),
        ("parameter", ("Name", [value, 1])),
        ("cmdlet", "Out-String"),
        ("parameter", ("Stream", None)),
    ]
    assert expected == _CallPipeline.made[0].calls


# --- powershell local: the child is kept from the agent ---------------------------------------


async def test_a_local_child_sees_no_agent_secret_and_runs_in_its_own_directory(
    ps_stand_in: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's environment has no secret of the agent's, and its cwd is a fresh directory,
    removed after the job."""
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("HR_DB_PASSWORD", secret)
    assert secret == os.environ["HR_DB_PASSWORD"]  # the premise: the agent's environment holds it
    records = await ps(ps_stand_in, {"command": "Get-ChildItem"})
    received = json.loads(records[0]["stdout"])
    assert secret not in json.dumps(received["env"])
    cwd = Path(received["cwd"])
    assert (True, False) == (cwd.name.startswith("bridgehead-script-"), cwd == Path.cwd())
    assert received["env"]["TMPDIR"] == str(cwd)
    assert not cwd.exists()


SH_STAND_IN = """#!/bin/sh
# STAND-IN for pwsh: reports who it runs as, where, and whether it can read its parent's
# (the agent's) environment from /proc.
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "groups=$(id -G)"
echo "cwd=$(pwd)"
if cat /proc/$PPID/environ >/dev/null 2>&1; then echo "environ=readable"; else echo "environ=denied"; fi
"""


@pytest.fixture
def sh_stand_in() -> Iterator[Path]:
    # Not under pytest's tmp_path (0700 to root): the other account must be able to run it.
    directory = Path(tempfile.mkdtemp(prefix="bh-stand-in-"))
    directory.chmod(0o755)
    path = directory / "pwsh"
    path.write_text(SH_STAND_IN)
    path.chmod(0o755)
    yield path
    path.unlink()
    directory.rmdir()


async def test_run_as_user_keeps_the_child_out_of_the_agents_process(sh_stand_in: Path) -> None:
    """As root the child can read the agent's /proc environ; as run_as_user = "nobody" it cannot,
    and it has nobody's uid and gid and none of root's groups."""
    assert 0 == os.geteuid(), "this test needs the agent (pytest) to run as root"
    as_root = (await ps(sh_stand_in, {"script": "x"}, allow_scripts=True))[0]["stdout"]
    assert "environ=readable" in as_root  # the premise: the check would see a leak
    nobody = pwd.getpwnam("nobody")
    records = await ps(sh_stand_in, {"script": "x"}, allow_scripts=True, run_as_user="nobody")
    lines = dict(line.split("=", 1) for line in records[0]["stdout"].splitlines())
    expected = {
        "uid": str(nobody.pw_uid),
        "gid": str(nobody.pw_gid),
        "groups": str(nobody.pw_gid),
        "environ": "denied",
    }
    assert expected == {k: lines[k] for k in expected}
    assert re.fullmatch(r".*/bridgehead-script-[^/]+", lines["cwd"]), lines["cwd"]
    assert not Path(lines["cwd"]).exists()


async def test_run_as_user_names_an_account_that_exists() -> None:
    """An unknown account is the profile's fault, reported before anything runs."""
    with pytest.raises(JobError) as caught:
        await ps(Path("/bin/true"), {"script": "x"}, allow_scripts=True, run_as_user="no-such-user-bh")
    assert "invalid_profile" == caught.value.code
