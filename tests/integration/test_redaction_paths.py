"""A secret that really reaches a log line, a driver's error, a traceback and a record, in each
of its encoded forms, is masked on every one of those paths, and no file or API answer holds it.

``test_secrets.py`` proves the secret stays out of files when jobs use it normally; here it is
pushed through each path on purpose, so that removing any one redaction step leaves a trace:

- log lines and tracebacks: a drop-in plugin (``leaky``, written as a buggy third-party plugin
  would be) logs the secret through its job logger, a library logger (message and ``extra``
  fields of the agent's JSON log lines), a warning, an exception logged with ``exc_info``, an
  exception in a thread of its own, and crashes or fails with it in the exception's message;
- driver errors: the built-in ``sql`` plugin against the real PostgreSQL (``invalid input
  syntax for type uuid: "<value>"``) and MariaDB (``SIGNAL ... MESSAGE_TEXT``), each echoing
  a value stored in a table, through pyodbc;
- records and HTTP errors: the built-in ``rest`` plugin against a real HTTP server that needs
  the secret (basic auth) and echoes it in a 200 answer's body and in a 500 answer's body;
- the control plane: a ServiceNow token endpoint that refuses the sink's client secret and
  echoes it in its error description.

Every scenario proves its premise first (the plugin really wrote the form, the raw driver's
error really holds it, the server really received the secret), then shows the masked text
where the secret was (``<<***>>``: masked whole, nothing left over), and at the end no file
under the run's directory and no API answer holds any form.
"""

from __future__ import annotations

import json
import os
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pyodbc
import pytest
from bridgehead_testing.databases import MARIA, PG, admin, mariadb_account
from bridgehead_testing.harness import Agent, Api, ControlPlane, wait_connected, wait_until
from bridgehead_testing.secret_forms import SECRET, basic_auth, encoded_forms

USER = "svc-bridgehead"  # the rest credential's user
# The leaky plugin's: basic auth of this user and the secret is registered by the agent alone
# (the rest plugin registers its own user's), so that scenario proves the agent does it.
LEAKY_USER = "svc-leaky"
FORMS = encoded_forms() | {"basic-auth": basic_auth(USER)}
# What the leaky plugin writes for each form: the same, but basic auth is of its own user.
LEAKY_FORMS = FORMS | {"basic-auth": basic_auth(LEAKY_USER)}
# Every text looked for in files and answers.
SCANNED = FORMS | {"basic-auth (leaky's user)": LEAKY_FORMS["basic-auth"]}
# The control plane registers the client secret itself; basic auth is the agent's (user:password).
CONTROL_FORMS = [form for form in FORMS if form != "basic-auth"]
MASKED = "<<***>>"
PASSWORD_ENV = "BH_TEST_REDACTION_PASSWORD"  # noqa: S105 - the name of a variable
# Unique per process: PostgreSQL and MariaDB are shared with whatever else runs on this machine.
TAG = f"bh_redact_{os.getpid()}"

LEAKY = textwrap.dedent(
    '''
    """A third-party plugin with every bug that puts a secret in the open, on purpose."""

    import asyncio
    import logging
    import threading
    import warnings
    from pathlib import Path

    from bridgehead_testing.secret_forms import basic_auth, encoded_forms

    from bridgehead.sdk import JobContext, Params, Plugin, Profile, SourceError


    class LeakyProfile(Profile):
        witness_dir: str


    class LeakyParams(Params):
        connection: str
        mode: str
        form: str


    def encodings(user, secret):
        # The same forms the test looks for (the agent runs where the test support is installed).
        return encoded_forms(secret) | {"basic-auth": basic_auth(user, secret)}


    class Leaky(Plugin[LeakyParams, LeakyProfile]):
        name = "leaky"
        params_type = LeakyParams
        profile_type = LeakyProfile

        async def run(self, ctx: JobContext[LeakyProfile], params: LeakyParams) -> None:
            form = params.form
            forms = encodings(ctx.credential.username, ctx.credential.password)
            text = forms[form] if form in forms else " ".join(f"{k}=<<{v}>>" for k, v in forms.items())
            # The witness (outside every directory the test scans): what this plugin really used.
            witness = Path(ctx.profile.witness_dir) / f"{params.mode}-{form}.txt"
            witness.write_text(text, encoding="utf-8")
            if params.mode == "progress":
                # Progress shows only while the job runs: it runs until the test has read it.
                ctx.progress(1, 2, f"leak progress {text}")
                release = Path(ctx.profile.witness_dir) / "release"
                while not release.exists():
                    await asyncio.sleep(0.02)
                return
            if params.mode == "crash":
                raise RuntimeError(f"leak crash form={form}: <<{text}>>")
            if params.mode == "error":
                raise SourceError(f"leak error form={form}: <<{text}>>")
            ctx.log.info("leak args form=%s: <<%s>>", form, text)
            ctx.log.warning(f"leak fstring form={form}: <<{text}>>")
            vendor = logging.getLogger("leaky.vendor")
            vendor.info(
                "leak vendor form=%s",
                form,
                extra={
                    "detail": f"<<{text}>>",
                    "nested": {"detail": [f"<<{text}>>"]},
                    "obj": ValueError(f"<<{text}>>"),
                },
            )
            warnings.warn(f"leak warning form={form}: <<{text}>>", stacklevel=1)
            try:
                raise ValueError(f"leak traceback form={form}: <<{text}>>")
            except ValueError:
                ctx.log.exception("leak handled form=%s", form)

            def fail() -> None:
                raise RuntimeError(f"leak thread form={form}: <<{text}>>")

            thread = threading.Thread(target=fail, name=f"leaky-{form}")
            thread.start()
            thread.join()


    PLUGIN = Leaky
    '''
)


class Target(BaseHTTPRequestHandler):
    """A real HTTP server: ``/api/echo/FORM`` answers 200 with the secret in that form in its body,
    ``/api/fail/FORM`` answers 500 with it, both only to the basic auth of USER and SECRET;
    ``/oauth_token.do`` refuses the client secret it is sent, echoing it in every form."""

    authorizations: list[str]
    client_secrets: list[str]

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        authorization = self.headers.get("Authorization", "")
        self.authorizations.append(authorization)
        if authorization != f"Basic {FORMS['basic-auth']}":
            self._answer(401, "text/plain", b"who are you?")
            return
        _api, kind, form = self.path.strip("/").split("/")
        if kind == "echo":
            self._answer(200, "text/plain; charset=utf-8", f"you sent <<{FORMS[form]}>>".encode())
        else:
            self._answer(500, "text/plain; charset=utf-8", f"no good: <<{FORMS[form]}>>".encode())

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        sent = parse_qs(self.rfile.read(length).decode())
        self.client_secrets += sent.get("client_secret", [])
        description = "client secret " + " ".join(f"{form}=<<{FORMS[form]}>>" for form in CONTROL_FORMS)
        answer = {"error": "invalid_client", "error_description": description}
        self._answer(401, "application/json", json.dumps(answer).encode())

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass


@dataclass
class Run:
    workdir: Path
    outside: Path  # holds the secret on purpose (witnesses, the client secret file); not scanned
    agent: Agent
    control: ControlPlane
    api: Api
    authorizations: list[str]
    client_secrets: list[str]
    driver_errors: dict[tuple[str, str], str] = field(default_factory=dict)  # (database, form) -> raw pyodbc text
    jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (scenario, form) -> job
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # form -> rest echo records
    delivery: dict[str, Any] = field(default_factory=dict)  # the sink job's view once its delivery ended
    progress: str = ""  # the progress message the job API showed for the leaky plugin's job
    live_files: list[str] = field(default_factory=list)  # the run's files while both processes ran
    live_scan: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # their scan, by part

    def log_lines(self) -> list[dict[str, Any]]:
        """The agent's JSON log lines (lines that are not JSON are left to the file scan)."""
        lines = []
        for line in self.agent.log_text().splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                lines.append(doc)
        return lines


def scan(root: Path, only: Callable[[Path], bool]) -> dict[str, list[str]]:
    """Each form of the secret found in a file under ``root`` that ``only`` selects."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and only(p)):
        data = path.read_bytes()
        for form, text in SCANNED.items():
            if text.encode() in data:
                found.setdefault(form, []).append(str(path.relative_to(root)))
    return found


def not_the_control_database(path: Path) -> bool:
    """Files other than the control plane's store (control.db, its WAL and shared memory)."""
    return not path.name.startswith("control.db")


def strings(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def forms_in(answer: Any) -> list[str]:
    """The forms of the secret in an API answer, as JSON text and as the strings it holds."""
    texts = (json.dumps(answer), json.dumps(answer, ensure_ascii=False), "\n".join(strings(answer)))
    return sorted(form for form, text in SCANNED.items() if any(text in t for t in texts))


def agent_profiles(target: str, outside: Path) -> str:
    return textwrap.dedent(
        f"""
        [connections.leaky]
        plugin = "leaky"
        witness_dir = "{outside}"
        credential = "leaky"

        [connections.target]
        plugin = "rest"
        base_url = "{target}/api"
        credential = "svc"

        [connections.pg]
        plugin = "sql"
        connection_string = "{PG}"
        credential = "pg"

        [connections.maria]
        plugin = "sql"
        connection_string = "{MARIA}"
        credential = "maria"

        [credentials.svc]
        username = "{USER}"
        password_env = "{PASSWORD_ENV}"

        [credentials.leaky]
        username = "{LEAKY_USER}"
        password_env = "{PASSWORD_ENV}"

        [credentials.pg]
        username = "root"
        password_env = "{PASSWORD_ENV}"

        [credentials.maria]
        username = "{TAG}"
        password_env = "{PASSWORD_ENV}"
        """
    )


def control_config(target: str, secret_file: Path) -> str:
    return textwrap.dedent(
        f"""
        [servicenow.echoing]
        url = "{target}"
        tables = ["u_x"]
        auth = "oauth_client_credentials"
        client_id = "bridgehead"
        client_secret_file = "{secret_file}"
        max_retries = 0
        """
    )


PG_QUERY = f"SELECT CAST(v AS uuid) AS n FROM {TAG} WHERE k = ?"  # noqa: S608 - TAG is ours
MARIA_QUERY = f"SELECT {TAG}(?) AS n"


@pytest.fixture(scope="module")
def tables() -> Iterator[None]:
    """The forms of the secret stored in PostgreSQL and MariaDB, and a MariaDB function that
    fails with the one asked for in its error message; a MariaDB account whose password is the
    secret (so that the server, not the test, shows the agent sent it)."""
    pg, maria = admin(PG), admin(MARIA)
    try:
        for conn in (pg, maria):
            cur = conn.cursor()
            cur.execute(f"DROP TABLE IF EXISTS {TAG}")
            cur.execute(f"CREATE TABLE {TAG} (k VARCHAR(64) PRIMARY KEY, v VARCHAR(512))")
            cur.executemany(f"INSERT INTO {TAG} (k, v) VALUES (?, ?)", list(FORMS.items()))  # noqa: S608
        cur = maria.cursor()
        cur.execute(f"DROP FUNCTION IF EXISTS {TAG}")
        cur.execute(
            f"CREATE FUNCTION {TAG}(p VARCHAR(64)) RETURNS INT READS SQL DATA BEGIN "  # noqa: S608 - TAG is ours
            f"DECLARE m VARCHAR(512); SELECT CONCAT('no good: <<', v, '>>') INTO m FROM {TAG} WHERE k = p; "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = m; RETURN 0; END"
        )
        with mariadb_account(TAG, SECRET):
            cur.execute(f"GRANT EXECUTE ON test.* TO '{TAG}'@'localhost'")
            cur.execute(f"GRANT EXECUTE ON test.* TO '{TAG}'@'%'")
            yield
    finally:
        for conn in (pg, maria):
            conn.cursor().execute(f"DROP TABLE IF EXISTS {TAG}")
        maria.cursor().execute(f"DROP FUNCTION IF EXISTS {TAG}")
        pg.close()
        maria.close()


def raw_driver_error(connection_string: str, user: str, query: str, form: str) -> str:
    """The error text pyodbc itself gives for ``query`` with ``form``, logged in with the secret."""
    conn = pyodbc.connect(f"{connection_string};UID={user};PWD={{{SECRET}}}", autocommit=True, timeout=10)
    try:
        conn.cursor().execute(query, form).fetchall()
    except pyodbc.Error as exc:
        return " ".join(str(arg) for arg in exc.args)  # not str(exc): that escapes backslashes
    finally:
        conn.close()
    raise AssertionError(f"{query!r} with {form!r} did not fail")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tables: None) -> Iterator[Run]:
    """One control plane and one agent (JSON logs at debug level), every scenario in every form,
    then the results, read while both still run."""
    workdir = tmp_path_factory.mktemp("redaction")
    outside = tmp_path_factory.mktemp("redaction-outside")
    secret_file = outside / "client_secret"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    plugins = outside / "plugins"
    plugins.mkdir()
    (plugins / "leaky.py").write_text(LEAKY)

    handler = type("Handler", (Target,), {"authorizations": [], "client_secrets": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = f"http://127.0.0.1:{server.server_address[1]}"
    control = ControlPlane(workdir, heartbeat_s=1.0, extra_config=control_config(target, secret_file))
    agent = Agent(
        workdir / "agents",
        "redaction-agent",
        [control.url],
        extra=agent_profiles(target, outside),
        env={PASSWORD_ENV: SECRET},
        plugins_dir=plugins,
    )
    agent.config.write_text(
        agent.config.read_text().replace("[control]", 'log_level = "debug"\nlog_format = "json"\n\n[control]', 1)
    )
    try:
        control.start()
        agent.enroll(control.enrollment_token())
        agent.start()
        api = control.api()
        wait_connected(api, [agent.name])
        result = Run(workdir, outside, agent, control, api, handler.authorizations, handler.client_secrets)
        for form in FORMS:
            result.driver_errors["pg", form] = raw_driver_error(PG, "root", PG_QUERY, form)
            result.driver_errors["maria", form] = raw_driver_error(MARIA, TAG, MARIA_QUERY, form)
        # First a job that reports progress, held running until its progress was read.
        progress_job = api.submit("leaky", {"connection": "leaky", "mode": "progress", "form": "all"}, max_attempts=1)
        result.progress = wait_until(
            lambda: (api.job(progress_job["id"]).get("progress") or {}).get("message"), 30, "the progress report"
        )
        (outside / "release").touch()
        submitted = {("progress", "all"): progress_job["id"]}
        for form in FORMS:
            for scenario, plugin, params in (
                ("log", "leaky", {"connection": "leaky", "mode": "log", "form": form}),
                ("crash", "leaky", {"connection": "leaky", "mode": "crash", "form": form}),
                ("error", "leaky", {"connection": "leaky", "mode": "error", "form": form}),
                ("pg", "sql", {"connection": "pg", "query": PG_QUERY, "parameters": [form]}),
                ("maria", "sql", {"connection": "maria", "query": MARIA_QUERY, "parameters": [form]}),
                ("echo", "rest", {"connection": "target", "path": f"/echo/{form}"}),
                ("fail", "rest", {"connection": "target", "path": f"/fail/{form}", "fail_on_status": True}),
            ):
                submitted[scenario, form] = api.submit(plugin, params, max_attempts=1)["id"]
        sink = {"servicenow": "echoing", "import_set": "u_x"}
        sink_job = api.submit("echo", {"records": [{"a": 1}]}, sink=sink, max_attempts=1)["id"]
        for key, job_id in submitted.items():
            result.jobs[key] = api.wait_done(job_id, timeout=60)
        for form in FORMS:
            result.records[form] = api.records(submitted["echo", form])
        result.delivery = wait_until(
            lambda: (view := api.job(sink_job)) and view["sync"]["state"] in ("done", "failed") and view,
            60,
            "the sink's delivery to end",
        )
        # Scanned while both run: WAL files and the spool exist only now.
        files = [p for p in workdir.rglob("*") if p.is_file()]
        result.live_files = sorted(str(p.relative_to(workdir)) for p in files)
        result.live_scan = {
            "others": scan(workdir, not_the_control_database),
            "control database": scan(workdir, lambda path: not not_the_control_database(path)),
        }
        yield result
    finally:
        (outside / "release").touch()  # should the run stop early, the held job ends too
        agent.stop(timeout=10)
        control.stop()
        server.shutdown()
        server.server_close()


def by_message(run: Run, message: str) -> list[dict[str, Any]]:
    return [line for line in run.log_lines() if line.get("message") == message]


@pytest.mark.parametrize("form", FORMS)
def test_a_plugins_log_lines_and_tracebacks_show_the_secret_masked(run: Run, form: str) -> None:
    """Logged as an argument, in an f-string, by a library logger (message and extra fields), as a
    warning, with exc_info and from a thread's uncaught exception: each line is there, the secret
    masked whole."""
    assert LEAKY_FORMS[form] == (run.outside / f"log-{form}.txt").read_text(encoding="utf-8")  # premise
    assert ("succeeded", None) == (run.jobs["log", form]["state"], run.jobs["log", form]["error"])
    assert by_message(run, f"leak args form={form}: {MASKED}")
    assert by_message(run, f"leak fstring form={form}: {MASKED}")
    [vendor] = by_message(run, f"leak vendor form={form}")
    assert (MASKED, {"detail": [MASKED]}, MASKED) == (vendor["detail"], vendor["nested"], vendor["obj"])
    [warned] = [line for line in run.log_lines() if f"leak warning form={form}:" in line.get("message", "")]
    assert f"UserWarning: leak warning form={form}: {MASKED}" in warned["message"]
    [handled] = by_message(run, f"leak handled form={form}")
    assert handled["exception"].endswith(f"ValueError: leak traceback form={form}: {MASKED}")
    [thread] = by_message(run, f"uncaught exception in thread 'leaky-{form}'")
    assert thread["exception"].endswith(f"RuntimeError: leak thread form={form}: {MASKED}")


@pytest.mark.parametrize("form", FORMS)
def test_a_plugin_crash_and_its_job_error_show_the_secret_masked(run: Run, form: str) -> None:
    """A plugin that crashes with the secret in its exception: the agent's traceback of the crash
    and the job's error both say so with the secret masked; likewise a JobError's message."""
    assert LEAKY_FORMS[form] == (run.outside / f"crash-{form}.txt").read_text(encoding="utf-8")  # premise
    crash = run.jobs["crash", form]
    assert ("failed", "plugin_crashed") == (crash["state"], crash["error"]["code"])
    assert f"RuntimeError: leak crash form={form}: {MASKED}" == crash["error"]["message"]
    tracebacks = [line.get("exception", "") for line in by_message(run, "plugin leaky crashed")]
    assert any(text.endswith(f"RuntimeError: leak crash form={form}: {MASKED}") for text in tracebacks)
    assert LEAKY_FORMS[form] == (run.outside / f"error-{form}.txt").read_text(encoding="utf-8")  # premise
    error = run.jobs["error", form]
    assert ("failed", "source_error") == (error["state"], error["error"]["code"])
    assert f"leak error form={form}: {MASKED}" == error["error"]["message"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("database", ["pg", "maria"])
def test_a_database_drivers_error_shows_the_secret_masked(run: Run, database: str, form: str) -> None:
    """PostgreSQL and MariaDB echo the stored value in their error; pyodbc passes it on; the sql
    job's error carries the driver's words with the secret masked. (The MariaDB account's
    password is the secret: the job reaching the query shows the agent logged in with it.)"""
    echoed = {"pg": 'invalid input syntax for type uuid: "{}"', "maria": "no good: <<{}>>"}[database]
    assert echoed.format(FORMS[form]) in run.driver_errors[database, form]  # premise: the raw driver's error
    job = run.jobs[database, form]
    assert ("failed", "sql_error") == (job["state"], job["error"]["code"]), job
    assert echoed.format("***") in job["error"]["message"]


def test_the_target_received_the_secret(run: Run) -> None:
    """Premise of the rest scenarios: every request carried the basic auth of USER and SECRET."""
    assert 2 * len(FORMS) == len(run.authorizations)
    assert {f"Basic {FORMS['basic-auth']}"} == set(run.authorizations)


@pytest.mark.parametrize("form", FORMS)
def test_what_an_http_server_echoes_is_masked_in_the_record_and_the_error(run: Run, form: str) -> None:
    """The server echoes the secret in a 200 body (a record) and in a 500 body (the job's error):
    both show it masked."""
    assert ("succeeded", [{"status": 200}]) == (
        run.jobs["echo", form]["state"],
        [{"status": r["status"]} for r in run.records[form]],
    )
    assert f"you sent {MASKED}" == run.records[form][0]["body"]
    failed = run.jobs["fail", form]
    assert ("failed", "http_status") == (failed["state"], failed["error"]["code"])
    assert failed["error"]["message"].endswith(f"answered HTTP 500 Internal Server Error: no good: {MASKED}")


def test_the_control_planes_log_shows_an_echoed_sink_secret_masked(run: Run) -> None:
    """The token endpoint received the sink's client secret and echoed it in every form: the
    control plane's log line of the failed delivery shows each masked."""
    assert [SECRET] == run.client_secrets  # premise: the secret really went out
    assert "failed" == run.delivery["sync"]["state"], run.delivery
    [line] = [line for line in run.control.log_text().splitlines() if "delivery failed (auth_failed)" in line]
    for form in CONTROL_FORMS:
        assert f"{form}={MASKED}" in line


def test_the_delivery_error_in_the_api_shows_an_echoed_sink_secret_masked(run: Run) -> None:
    """The failed delivery's error, as the job API shows it, has every form masked."""
    error = run.delivery["sync"]["error"]
    assert "auth_failed" == error["code"]
    assert [] == forms_in(error)
    for form in CONTROL_FORMS:
        assert f"{form}={MASKED}" in error["message"]


def test_a_plugins_progress_message_shows_the_secret_masked(run: Run) -> None:
    """A progress message with the secret in every form, as the job API shows it while the job
    runs, has each form masked."""
    every = " ".join(f"{form}=<<{text}>>" for form, text in LEAKY_FORMS.items())
    assert every == (run.outside / "progress-all.txt").read_text(encoding="utf-8")  # premise
    assert "succeeded" == run.jobs["progress", "all"]["state"]
    assert "leak progress " + " ".join(f"{form}={MASKED}" for form in LEAKY_FORMS) == run.progress


def test_no_api_answer_holds_the_secret(run: Run) -> None:
    """Every job and every record the API answered holds no form of the secret."""
    answers = {f"{scenario} {form}": job for (scenario, form), job in run.jobs.items()}
    answers |= {f"records {form}": records for form, records in run.records.items()}
    assert {} == {name: forms for name, answer in answers.items() if (forms := forms_in(answer))}


def test_no_file_of_the_run_holds_the_secret(run: Run) -> None:
    """While both ran, and after both stopped: no log, journal or spool of the agent, no log of
    the control plane holds any form of the secret (its database: the test below)."""
    logs = [run.agent.log, run.control.log]
    assert all(path.stat().st_size > 0 for path in logs)  # premise: the scan reads what was written
    assert "agents/redaction-agent/data/journal.db" in run.live_files, run.live_files
    assert {} == scan(run.workdir, not_the_control_database)
    assert {} == run.live_scan["others"]
    run.agent.stop(timeout=10)
    run.control.stop()
    assert {} == scan(run.workdir, not_the_control_database)


def test_the_control_planes_database_holds_no_form_of_the_secret(run: Run) -> None:
    """While it ran, and after it stopped: control.db and its WAL hold no form of the secret."""
    assert any(name.startswith("control/control.db") for name in run.live_files)  # premise
    assert {} == run.live_scan["control database"]
    run.control.stop()
    assert {} == scan(run.workdir, lambda path: not not_the_control_database(path))


def test_the_scan_finds_every_form_where_it_was_written(tmp_path: Path) -> None:
    """Premise of the scans: every form differs from the others, and each is found in a file
    (among binary bytes, as in a SQLite page) and in an API answer."""
    assert len(SCANNED) == len(set(SCANNED.values()))
    for form, text in SCANNED.items():
        (tmp_path / f"{len(text)}-{abs(hash(form))}.bin").write_bytes(b"\x00junk" + text.encode() + b"junk\xff")
    assert sorted(SCANNED) == sorted(scan(tmp_path, lambda _path: True))
    assert sorted(SCANNED) == forms_in({"error": {"message": list(SCANNED.values())}})
