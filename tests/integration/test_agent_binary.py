"""The built agent binary, run as an admin runs it: no Python on PATH, nothing of this
virtualenv in its environment, against the real servers the other integration tests use.

The binary is ``$BRIDGEHEAD_AGENT_BIN`` (scripts/test builds it with scripts/build-agent and
sets that for this file only), else ``dist/bridgehead-agent``; with neither, every test here
FAILS and says to build it. The control plane is this virtualenv's, as in the other tests.

What is proved about the binary itself, beyond the jobs' results: the agent process is the
binary (its own bundled Python, no file of this machine's Python mapped), ODBC is the
system's unixODBC and drivers (mapped from system paths, not the bundle), a drop-in plugin in
``plugins_dir`` imports the SDK and the standard library from inside the binary, and kill -9
ends the whole one-file process pair (bootloader and agent), after which a restart finishes
the interrupted job. PowerShell itself cannot run here: the local transport runs a /bin/sh
stand-in, and psrp reaches a real TLS endpoint that refuses the credential (real pypsrp from
the bundle, to the point where Windows would answer).
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.databases import MARIA, PG
from bridgehead_testing.harness import ROOT, Agent, Api, ControlPlane, scaled, wait_connected, wait_until
from bridgehead_testing.pki import Pki, write_test_pki
from bridgehead_testing.slapd import Slapd
from bridgehead_testing.sshd import Sshd, TestUser, make_client_key

BinaryAgents = Callable[..., Agent]

# Where unixODBC and the Debian ODBC drivers live: the agent must map them from here.
SYSTEM_LIBRARY_DIRS = ("/usr/lib/", "/lib/")
SYSTEM_ODBC = ("libodbc.so", "libodbcinst.so", "psqlodbcw.so", "libmaodbc.so")


def binary_path() -> Path:
    named = os.environ.get("BRIDGEHEAD_AGENT_BIN")
    return Path(named).resolve() if named else ROOT / "dist" / "bridgehead-agent"


@pytest.fixture(scope="module")
def binary() -> Path:
    path = binary_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"no agent binary at {path} (BRIDGEHEAD_AGENT_BIN or dist/bridgehead-agent): run scripts/build-agent first"
        )
    return path


@pytest.fixture
def bare_env(tmp_path: Path, binary: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The agent's whole environment: PATH is an empty directory. Also makes the harness run
    the binary (``agent_command``) for this test only."""
    empty = tmp_path / "path-with-nothing"
    empty.mkdir()
    (tmp_path / "home").mkdir()
    env = {"PATH": str(empty), "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8"}
    found = subprocess.run(
        ["/bin/sh", "-c", "command -v python3 || command -v python || command -v python3.11"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert found.returncode != 0, f"the premise fails: python is reachable in the agent's environment: {found.stdout!r}"
    monkeypatch.setenv("BRIDGEHEAD_AGENT_BIN", str(binary))
    return env


@pytest.fixture
def binary_agents(tmp_path: Path, bare_env: dict[str, str]) -> Iterator[BinaryAgents]:
    started: list[Agent] = []

    def make(control: ControlPlane, name: str = "bin-agent", **kwargs: Any) -> Agent:
        agent = Agent(tmp_path / "agents", name, [control.url], **kwargs)
        agent.env = dict(bare_env)  # not this process's environment plus some: only this
        started.append(agent)
        agent.enroll(control.enrollment_token())
        agent.start()
        wait_connected(control.api(), [name])
        return agent

    yield make
    for agent in started:
        agent.stop(timeout=10)


def agent_process(agent: Agent) -> int:
    """The pid of the agent's Python: the one-file bootloader's only child."""
    assert agent.proc is not None
    bootloader = agent.proc.pid

    def child() -> list[int]:
        found: list[int] = []
        for task in Path(f"/proc/{bootloader}/task").iterdir():
            found += [int(pid) for pid in (task / "children").read_text().split()]
        return found

    (pid,) = wait_until(child, 10, "the bootloader to start the agent")
    return int(pid)


def mapped_files(pid: int) -> set[str]:
    """The files a process maps (its executable, shared libraries), from ``/proc/PID/maps``."""
    fields = (line.split(None, 5) for line in Path(f"/proc/{pid}/maps").read_text().splitlines())
    return {f[5] for f in fields if len(f) == 6 and f[5].startswith("/")}


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie that nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] == "Z"
    except FileNotFoundError:
        return True


def assert_is_the_binary(agent: Agent, binary: Path) -> set[str]:
    """The agent process runs the binary's own Python; what it maps, for further checks."""
    pid = agent_process(agent)
    assert binary == Path(f"/proc/{pid}/exe").resolve()
    files = mapped_files(pid)
    this_python = {str(Path(p).resolve()) for p in (sys.prefix, sys.base_prefix)}
    assert not [f for f in files if f.startswith(tuple(this_python))], "the agent maps this machine's Python"
    assert [f for f in files if "libpython3" in f], "no bundled libpython mapped"
    assert [f for f in files if "/uvloop/" in f], "the binary runs without uvloop (bridgehead.core.eventloop)"
    return files


# --- the servers the jobs reach ---------------------------------------------------------------


class ItemsApi(http.server.BaseHTTPRequestHandler):
    """A JSON API on loopback: ``GET /items`` answers two items."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"items": [{"id": 1, "name": "first"}, {"id": 2, "name": "second"}]}).encode()
        self.send_response(200 if self.path == "/items" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class RefusingWinRM(http.server.BaseHTTPRequestHandler):
    """A WinRM endpoint that refuses every credential, as a real one does a wrong password."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="WSMAN"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def serve(handler: type[http.server.BaseHTTPRequestHandler], context: ssl.SSLContext | None = None) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def items_api() -> Iterator[int]:
    yield from serve(ItemsApi)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    (tmp_path / "pki").mkdir()
    return write_test_pki(tmp_path / "pki")


@pytest.fixture
def winrm(pki: Pki) -> Iterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    yield from serve(RefusingWinRM, context)


# A STAND-IN for pwsh (none exists on this machine), in /bin/sh since no Python may be on the
# agent's PATH: checks the argv the local transport builds and echoes the encoded script.
PWSH_STAND_IN = """#!/bin/sh
[ "$1 $2 $3" = "-NoProfile -NonInteractive -EncodedCommand" ] || { echo "unexpected: $*" >&2; exit 2; }
printf 'stand-in pwsh got %s\\n' "$4"
"""


def profiles(
    tmp_path: Path, slapd: Slapd, sshd: Sshd, user: TestUser, key: Path, items_port: int, winrm_port: int, pki: Pki
) -> str:
    pwsh = tmp_path / "pwsh-stand-in"
    pwsh.write_text(PWSH_STAND_IN)
    pwsh.chmod(0o755)
    return f"""
[connections.pg]
plugin = "sql"
connection_string = "{PG}"
credential = "root"

[connections.maria]
plugin = "sql"
connection_string = "{MARIA}"
credential = "root"

[connections.dir]
plugin = "ldap"
url = "{slapd.url}"
credential = "reader"

[connections.box]
plugin = "ssh"
host = "{sshd.host}"
port = {sshd.port}
host_key = "{sshd.host_key_fingerprint()}"
credential = "login"

[connections.api]
plugin = "rest"
base_url = "http://127.0.0.1:{items_port}"

[connections.here]
plugin = "powershell"
transport = "local"
executable = "{pwsh}"
allow_scripts = true

[connections.win]
plugin = "powershell"
transport = "psrp"
host = "127.0.0.1"
port = {winrm_port}
auth = "basic"
ca_file = "{pki.ca_file}"
allow_scripts = true
credential = "windows"

[credentials.root]
username = "root"

[credentials.reader]
username = "{slapd.reader_dn}"
password = "{slapd.reader_password}"

[credentials.login]
username = "{user.name}"
private_key_file = "{key}"

[credentials.windows]
username = "CORP\\\\svc"
password = "winrm-pass-refused"
"""


@pytest.fixture
def client_key(tmp_path: Path, sshd: Sshd, test_user: TestUser) -> Path:
    private, public = make_client_key(tmp_path / "id_ed25519")
    sshd.add_authorized_key(test_user.name, public)
    return private


def outcome(api: Api, job_id: str) -> tuple[str, Any]:
    """A job's end: ``("succeeded", records)`` or ``("failed", error code)``."""
    done = api.wait_done(job_id, timeout=60)
    if done["state"] == "succeeded":
        return "succeeded", api.records(job_id)
    return done["state"], (done.get("error") or {}).get("code")


def test_the_binary_alone_enrolls_and_runs_every_plugin_against_the_real_servers(
    tmp_path: Path,
    binary: Path,
    control: ControlPlane,
    binary_agents: BinaryAgents,
    slapd: Slapd,
    sshd: Sshd,
    test_user: TestUser,
    client_key: Path,
    items_api: int,
    winrm: int,
    pki: Pki,
) -> None:
    extra = profiles(tmp_path, slapd, sshd, test_user, client_key, items_api, winrm, pki)
    agent = binary_agents(control, extra=extra)
    assert_is_the_binary(agent, binary)
    api = control.api()
    script = "Get-Date"
    jobs = {
        "pg": api.submit("sql", {"connection": "pg", "query": "SELECT 1 AS one, 'bridgehead' AS word"}),
        "maria": api.submit("sql", {"connection": "maria", "query": "SELECT 1 AS one, 'bridgehead' AS word"}),
        "ldap": api.submit("ldap", {"connection": "dir", "base": f"ou=people,{slapd.suffix}", "filter": "(uid=*)"}),
        "ssh": api.submit("ssh", {"connection": "box", "command": "id -un"}),
        "rest": api.submit("rest", {"connection": "api", "path": "/items", "records_path": "items"}),
        "local": api.submit("powershell", {"connection": "here", "script": script}),
        "psrp": api.submit("powershell", {"connection": "win", "script": script}, max_attempts=1),
        "echo": api.submit("echo", {"count": 3}),
    }
    ends = {name: outcome(api, job["id"]) for name, job in jobs.items()}

    row = [{"one": 1, "word": "bridgehead"}]
    assert ("succeeded", row) == ends["pg"]
    assert ("succeeded", row) == ends["maria"]
    state, people = ends["ldap"]
    assert ("succeeded", 30) == (state, len(people)), ends["ldap"]
    assert ("succeeded", [{"exit_code": 0, "stdout": f"{test_user.name}\n", "stderr": ""}]) == ends["ssh"]
    assert ("succeeded", [{"id": 1, "name": "first"}, {"id": 2, "name": "second"}]) == ends["rest"]
    encoded = base64.b64encode(script.encode("utf-16-le")).decode()
    assert ("succeeded", [{"exit_code": 0, "stdout": f"stand-in pwsh got {encoded}\n", "stderr": ""}]) == ends["local"]
    assert ("failed", "auth_failed") == ends["psrp"]  # pypsrp from the bundle reached WinRM over TLS
    assert ("succeeded", [{"n": 0}, {"n": 1}, {"n": 2}]) == ends["echo"]

    # ODBC was the system's: unixODBC and both drivers mapped from the system's library paths.
    files = assert_is_the_binary(agent, binary)
    for library in SYSTEM_ODBC:
        paths = [f for f in files if Path(f).name.startswith(library)]
        assert paths, f"{library} is not loaded"
        assert all(p.startswith(SYSTEM_LIBRARY_DIRS) for p in paths), paths


def test_kill_9_then_a_restart_finishes_the_interrupted_job(
    binary: Path, control: ControlPlane, binary_agents: BinaryAgents
) -> None:
    """kill -9 of the one-file process pair mid-query; the restarted binary runs the read-only
    job again to success, and no agent of the killed pair lives on (an orphan would still hold
    the session)."""
    extra = f'[connections.pg]\nplugin = "sql"\nconnection_string = "{PG}"\ncredential = "root"\n\n'
    agent = binary_agents(control, extra=extra + '[credentials.root]\nusername = "root"\n')
    killed = agent_process(agent)
    api = control.api()
    job = api.submit("sql", {"connection": "pg", "query": "SELECT 1 AS one FROM pg_sleep(2)"})
    wait_until(lambda: api.job(job["id"])["state"] == "running", 20, "the job to run on the agent")
    agent.kill9()
    wait_until(lambda: gone(killed), 5, "the killed agent to be gone (not orphaned by its bootloader)")
    assert "succeeded" != api.job(job["id"])["state"], "the job ended before the kill"
    agent.start()
    done = api.wait_done(job["id"], timeout=scaled(60))
    assert ("succeeded", 1) == (done["state"], done["record_count"]), done
    assert done["attempt"] >= 2, done
    assert [{"one": 1}] == api.records(job["id"])
    assert_is_the_binary(agent, binary)  # the restarted agent too


# A drop-in plugin as an admin would write one: the SDK and the standard library only, both
# from inside the binary (statistics and csv are modules the agent itself never imports).
DROP_IN = """
import csv
import io
import statistics
import sys

from bridgehead.sdk import JobContext, NoProfile, Params, Plugin


class MeanParams(Params):
    csv_text: str


class MeanPlugin(Plugin[MeanParams, NoProfile]):
    name = "mean"
    version = "1"
    params_type = MeanParams
    profile_type = NoProfile
    safe_to_repeat = True

    async def run(self, ctx: JobContext[NoProfile], params: MeanParams) -> None:
        values = [float(row[0]) for row in csv.reader(io.StringIO(params.csv_text))]
        await ctx.emit({"mean": statistics.fmean(values), "frozen": bool(getattr(sys, "frozen", False))})


PLUGIN = MeanPlugin
"""


def test_a_drop_in_plugin_runs_inside_the_binary(
    tmp_path: Path, binary: Path, bare_env: dict[str, str], control: ControlPlane, binary_agents: BinaryAgents
) -> None:
    plugins_dir = tmp_path / "plugins"
    plugins_dir.mkdir()
    (plugins_dir / "mean.py").write_text(DROP_IN)
    agent = binary_agents(control, plugins_dir=plugins_dir)
    assert_is_the_binary(agent, binary)

    check = subprocess.run(
        [str(binary), "check", "--config", str(agent.config)],
        env=bare_env,
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )
    assert 0 == check.returncode, check.stderr
    assert "plugins: echo, ldap, mean, powershell, rest, sql, ssh;" in check.stdout, check.stdout

    api = control.api()
    job = api.submit("mean", {"csv_text": "1\n2\n6\n"})
    assert ("succeeded", [{"mean": 3.0, "frozen": True}]) == outcome(api, job["id"])


def test_version_answers_as_the_cli_does(binary: Path, bare_env: dict[str, str]) -> None:
    """The binary answers a lone ``--version`` before importing the CLI (packaging/pyinstaller/
    agent_main.py): the same line as argparse's, in the binary and from the virtualenv."""

    def version(*command: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=scaled(30))
        assert 0 == result.returncode, result.stderr
        return result.stdout

    fast = version(str(binary), "--version", env=bare_env)
    assert fast.startswith("bridgehead-agent ")
    assert fast == version(str(binary), "--version", "--version", env=bare_env)  # through argparse
    assert fast == version(sys.executable, "-m", "bridgehead.agent.cli", "--version")
