"""A secret kept in the agent's vault and used by jobs reaches no file the run wrote, in any form.

One run, shared by the tests below: a control plane, an agent whose rest credential's password
is a vault entry (set through ``bridgehead-agent secret set`` on standard input), and a local
HTTP target that requires that password (basic auth) and echoes it back in every form. Jobs
succeed, echo, fail with the target's answer in their error, and fail to connect. Then every
file under the agent's directory (log, data_dir: journal.db and its WAL, vault.json) and the
control plane's (control.db and its WAL, log) is scanned for the secret, plain and encoded.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from bridgehead_testing.harness import Agent, ControlPlane, free_port, scaled, wait_connected

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and /proc")

USER = "svc-bridgehead"
# Every form below differs from the others: a space (quote vs quote_plus), '/', '+', '"' and a
# non-ASCII letter (JSON escapes), and base64 with '+' and '/' in it.
SECRET = 'Pa ss/w+rd"é-9f2c&x=1?>'  # noqa: S105 - a fake secret, looked for in every file
BASIC = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
FORMS = {
    "plain": SECRET,
    "basic auth (user:password)": BASIC,
    "base64": base64.b64encode(SECRET.encode()).decode().rstrip("="),
    "url-encoded": quote(SECRET, safe=""),
    "url-encoded (plus)": quote_plus(SECRET),
    "json-escaped": json.dumps(SECRET)[1:-1],
    "json-escaped (utf-8)": json.dumps(SECRET, ensure_ascii=False)[1:-1],
    "hex": SECRET.encode().hex(),
}


def scan(root: Path) -> dict[str, list[str]]:
    """Each form of the secret found under ``root``, with the files (relative) that hold it."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for form, text in FORMS.items():
            if text.encode() in data:
                found.setdefault(form, []).append(str(path.relative_to(root)))
    return found


class Target(BaseHTTPRequestHandler):
    """/api/items needs the basic auth of USER and SECRET; /api/echo answers with the request's
    Authorization header and the password it carries, in every form; /api/fail answers 500
    with the password in its body."""

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        authorization = self.headers.get("Authorization", "")
        if authorization != f"Basic {BASIC}":
            self._answer(401, "text/plain", b"who are you?")
            return
        password = base64.b64decode(authorization.split()[1]).decode().split(":", 1)[1]
        if self.path == "/api/items":
            self._answer(200, "application/json", json.dumps({"items": [{"id": 1}, {"id": 2}]}).encode())
        elif self.path == "/api/echo":
            echoed = {"authorization": authorization, "password": password, "forms": list(FORMS.values())}
            self._answer(200, "application/json", json.dumps(echoed).encode(), {"X-Echo": authorization})
        elif self.path == "/api/echo-text":
            self._answer(200, "text/plain; charset=utf-8", f"you sent {password} as {authorization}".encode())
        else:
            self._answer(500, "text/plain; charset=utf-8", f"internal error for password={password}".encode())

    def _answer(self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass


@dataclass
class Run:
    workdir: Path
    agent: Agent
    control: ControlPlane
    check_before_set: subprocess.CompletedProcess[str]
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    listing: str = ""
    live_scan: dict[str, list[str]] = field(default_factory=dict)
    live_files: list[str] = field(default_factory=list)
    agent_environ: subprocess.CompletedProcess[bytes] | None = None
    dumpable_environ: subprocess.CompletedProcess[bytes] | None = None


def agent_cli(agent: Agent, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridgehead.agent.cli", *args, "--config", str(agent.config)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=scaled(30),
        env=agent.env,
    )


def unprivileged_prefix() -> list[str] | None:
    """A command prefix that runs a program as this user without any capability, or None if
    that cannot be done. As root, ``setpriv`` drops them all; then, as for an ordinary user,
    only the same-user rule and the target's dumpable flag decide who may read its /proc files
    (a process may never read those of one with capabilities it lacks)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    return None if setpriv is None else [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--"]


UNPRIVILEGED = unprivileged_prefix() if sys.platform.startswith("linux") else None


class UnprivilegedAgent(Agent):
    """The agent run through ``UNPRIVILEGED``, as the same user as the reader of its /proc files."""

    def start(self) -> UnprivilegedAgent:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(UNPRIVILEGED or []),
                    sys.executable,
                    "-m",
                    "bridgehead.agent.cli",
                    "run",
                    "--config",
                    str(self.config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        return self


def read_environ(pid: int) -> subprocess.CompletedProcess[bytes]:
    """/proc/PID/environ read by a same-user process without privileges."""
    command = [*(UNPRIVILEGED or []), "cat", f"/proc/{pid}/environ"]
    return subprocess.run(command, capture_output=True, timeout=scaled(10), check=False)


def read_environ_of_a_dumpable_process() -> subprocess.CompletedProcess[bytes]:
    """The same read of an ordinary (dumpable) process started the same way as the agent."""
    # It says when it runs (after exec, so /proc shows its own environment), then waits for
    # its standard input to close.
    program = "import sys; print('ready', flush=True); sys.stdin.read()"
    sleeper = subprocess.Popen(
        [*(UNPRIVILEGED or []), sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert sleeper.stdout is not None
        assert b"ready\n" == sleeper.stdout.readline()
        return read_environ(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.communicate()  # reaps it and closes both pipes


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The whole run: vault entry set through the CLI, jobs of every outcome, then a scan while
    both processes run (WAL files present) and everything stopped."""
    workdir = tmp_path_factory.mktemp("secrets")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Target)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = f"http://127.0.0.1:{server.server_address[1]}/api"
    extra = (
        f'[connections.target]\nplugin = "rest"\nbase_url = "{target}"\ncredential = "svc"\n\n'
        f'[connections.closed]\nplugin = "rest"\nbase_url = "http://127.0.0.1:{free_port()}"\ncredential = "svc"\n\n'
        f'[credentials.svc]\nusername = "{USER}"\npassword_secret = "svc_pw"\n'
    )
    control = ControlPlane(workdir, heartbeat_s=1.0)
    agent = UnprivilegedAgent(workdir / "agents", "secret-agent", [control.url], extra=extra)
    # Debug logging widens what could leak.
    agent.config.write_text(agent.config.read_text().replace("[control]", 'log_level = "debug"\n\n[control]', 1))
    try:
        control.start()
        agent.enroll(control.enrollment_token())
        result = Run(workdir, agent, control, check_before_set=agent_cli(agent, "check"))
        stored = agent_cli(agent, "secret", "set", "svc_pw", stdin=SECRET + "\n")
        assert 0 == stored.returncode, stored.stderr
        result.listing = agent_cli(agent, "secret", "list").stdout
        agent.start()
        api = control.api()
        wait_connected(api, [agent.name])
        for name, params in {
            "items": {"connection": "target", "path": "/items", "records_path": "items"},
            "echo": {"connection": "target", "path": "/echo"},
            "echo-text": {"connection": "target", "path": "/echo-text"},
            "fail": {"connection": "target", "path": "/fail", "fail_on_status": True},
            "closed": {"connection": "closed", "path": "/private"},
        }.items():
            job = api.submit("rest", params, max_attempts=1)
            result.jobs[name] = api.wait_done(job["id"], timeout=30)
            if result.jobs[name]["state"] == "succeeded":
                result.records[name] = api.records(job["id"])
        assert agent.proc is not None
        if UNPRIVILEGED is not None:
            result.agent_environ = read_environ(agent.proc.pid)
            result.dumpable_environ = read_environ_of_a_dumpable_process()
        result.live_files = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file())
        result.live_scan = scan(workdir)
        yield result
    finally:
        agent.stop(timeout=10)
        control.stop()
        server.shutdown()
        server.server_close()


def test_the_scanner_finds_every_form_where_it_was_written(tmp_path: Path) -> None:
    """Premise: each encoded form written into a file (text or SQLite-like bytes) is found by the scan."""
    for form, text in FORMS.items():
        (tmp_path / f"{len(text)}-{abs(hash(form))}.bin").write_bytes(b"\x00junk" + text.encode() + b"junk\xff")
    found = scan(tmp_path)
    assert sorted(FORMS) == sorted(found)
    assert len(set(FORMS.values())) == len(FORMS)  # and every form is a different text


def test_check_names_a_missing_vault_secret(run: Run) -> None:
    """Before the entry is set, `check` exits 2 naming the credential's key and the missing secret."""
    result = run.check_before_set
    assert 2 == result.returncode, result.stderr
    assert "credentials.svc.password_secret: no secret 'svc_pw' in the vault" in result.stderr


def test_secret_list_shows_the_name_and_not_the_value(run: Run) -> None:
    """`secret list` names the entry; the value is in none of its forms."""
    assert run.listing.startswith("svc_pw\tset ")
    assert {} == {form: text for form, text in FORMS.items() if text in run.listing}


def test_the_target_got_the_secret_and_the_jobs_ended_as_expected(run: Run) -> None:
    """The vault's password reached the target (it answers 200 only to it); the failing jobs failed."""
    outcome = {name: (job["state"], (job.get("error") or {}).get("code")) for name, job in run.jobs.items()}
    assert {
        "items": ("succeeded", None),
        "echo": ("succeeded", None),
        "echo-text": ("succeeded", None),
        "fail": ("failed", "http_status"),
        "closed": ("failed", "source_unavailable"),
    } == outcome
    assert [{"id": 1}, {"id": 2}] == run.records["items"]
    assert "internal error for password=***" in run.jobs["fail"]["error"]["message"]


def test_what_the_target_echoed_is_masked_in_the_records(run: Run) -> None:
    """The echoed Authorization header and password, in every form, reach the records as ***."""
    [echo] = run.records["echo"]
    assert 200 == echo["status"]
    # The header's whole value ("Basic ...") is one of the masked values.
    assert ("***", "***") == (echo["body"]["authorization"], echo["body"]["password"])
    assert ["***"] * len(FORMS) == echo["body"]["forms"]
    assert "***" == echo["headers"]["x-echo"]
    [text] = run.records["echo-text"]
    assert "you sent *** as ***" == text["body"]


def test_no_file_of_the_running_system_holds_the_secret(run: Run) -> None:
    """While both run: agent log, journal.db and its WAL, vault.json, control.db and its WAL hold no form."""
    for expected in ("agents/secret-agent/agent.log", "agents/secret-agent/data/vault.json", "control/control.db"):
        assert expected in run.live_files  # premise: the scan saw the files that matter
    assert any(f.endswith("-wal") for f in run.live_files), run.live_files
    assert {} == run.live_scan


def test_no_file_holds_the_secret_after_both_stopped(run: Run) -> None:
    """After both processes stopped (WALs checkpointed into the databases), still no form anywhere."""
    run.agent.stop(timeout=10)
    run.control.stop()
    assert {} == scan(run.workdir)
    assert {} == {form: text for form, text in FORMS.items() if text in json.dumps(run.jobs, ensure_ascii=False)}


@pytest.mark.skipif(UNPRIVILEGED is None, reason="Linux only; as root, needs setpriv to drop capabilities")
def test_a_same_user_process_cannot_read_the_agents_environment(run: Run) -> None:
    """The agent is non-dumpable: a same-user process without privileges is refused its /proc/PID/environ."""
    assert run.dumpable_environ is not None and run.agent_environ is not None
    # Premise: the same reader reads the environment of an ordinary process of the same user.
    assert (0, True) == (run.dumpable_environ.returncode, b"PATH=" in run.dumpable_environ.stdout)
    assert (1, b"") == (run.agent_environ.returncode, run.agent_environ.stdout)
    assert b"Permission denied" in run.agent_environ.stderr
