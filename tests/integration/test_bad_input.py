"""Bad input gets a clear, specific error, loses nothing and crashes nothing: real processes.

Most request-level cases share one control plane and agent (module scope) so the file stays
fast; each test sends its own bad input, so any one passes alone and in any order (the last
two send one of every kind, then check the processes still serve and logged no unhandled
error). Cases that leave state behind (queued jobs, deep params) get their own control plane.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.harness import Agent, Api, ControlPlane, free_port, run_cli, scaled, wait_connected, wait_until
from bridgehead_testing.scripted_agent import ScriptedIdentity, hello_bytes
from bridgehead_testing.scripted_agent import enroll as scripted_enroll
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

AgentFactory = Callable[..., Agent]
TERMINAL = ("succeeded", "failed", "cancelled")
SUBPROTOCOL = "bridgehead.v1"
MiB = 1024 * 1024
SHARED_AGENT = "shared-agent"
# A rest profile that points nowhere, and a profile that belongs to another plugin.
SHARED_PROFILES = f"""
[connections.internal]
plugin = "rest"
base_url = "http://127.0.0.1:{free_port()}"

[connections.smoke]
plugin = "echo"
"""


@dataclass
class Shared:
    control: ControlPlane
    agent: Agent

    @property
    def api(self) -> Api:
        return self.control.api()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One control plane (1 s heartbeat) and one connected agent, for every cheap bad request."""
    workdir = tmp_path_factory.mktemp("shared")
    control = ControlPlane(workdir, heartbeat_s=1.0)
    agent = Agent(workdir / "agents", SHARED_AGENT, [control.url], extra=SHARED_PROFILES)
    try:
        control.start()
        agent.enroll(control.enrollment_token())
        agent.start()
        wait_connected(control.api(), [SHARED_AGENT])
        yield Shared(control, agent)
    finally:
        agent.stop(timeout=10)
        control.stop()


def assert_serving(control: ControlPlane) -> None:
    """The control plane process is alive and answers /healthz."""
    assert control.proc is not None
    assert None is control.proc.poll(), control.log_text()[-3000:]
    assert 200 == control.api().request("GET", "/healthz")[0]


def error_of(status: int, body: Any) -> tuple[int, str, str]:
    """(status, error.code, error.message) of an error answer; fails if the body is not that shape."""
    assert isinstance(body, dict) and set(body) == {"error"}, (status, body)
    assert {"code", "message"} <= set(body["error"]), (status, body)
    return status, body["error"]["code"], body["error"]["message"]


def job_count(api: Api) -> int:
    status, body = api.request("GET", "/api/v1/jobs?limit=1000")
    assert 200 == status, body
    return len(body["jobs"])


def one_line(result: Any) -> str:
    """The single line a failing command printed on stderr."""
    lines = result.stderr.strip().splitlines()
    assert 1 == len(lines), result.stderr
    return str(lines[0])


# --- API: authentication and roles --------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "fragment"),
    [("", "Authorization"), ("bh_not-a-token-anyone-made", "unknown")],
    ids=["no-header", "unknown-token"],
)
def test_missing_or_unknown_token_is_401_unauthorized(shared: Shared, token: str, fragment: str) -> None:
    """No Authorization header, or a token nobody created, is a 401 'unauthorized' that says which."""
    api = Api(shared.control.url, None)
    before = job_count(shared.api)
    status, code, message = error_of(*api.request("POST", "/api/v1/jobs", {"plugin": "echo", "params": {}}, token))
    assert (401, "unauthorized") == (status, code)
    assert fragment in message, message
    assert before == job_count(shared.api)


def test_viewer_may_not_submit_a_job(shared: Shared) -> None:
    """A viewer token POSTing a job gets 403 'forbidden' naming its role, and no job is made."""
    viewer = shared.control.token("viewer")
    before = job_count(shared.api)
    status, code, message = error_of(
        *shared.api.request("POST", "/api/v1/jobs", {"plugin": "echo", "params": {}}, token=viewer)
    )
    assert (403, "forbidden") == (status, code)
    assert "viewer" in message, message
    assert before == job_count(shared.api)


def test_operator_submits_but_only_admin_creates_enrollment_tokens(shared: Shared) -> None:
    """An operator may submit a job but not create an enrolment token; viewer neither; admin may."""
    operator, viewer = shared.control.token("operator"), shared.control.token("viewer")
    api = shared.api
    status, job = api.request("POST", "/api/v1/jobs", {"plugin": "echo", "params": {"count": 1}}, token=operator)
    assert 201 == status, job
    refused = [error_of(*api.request("POST", "/api/v1/enrollment-tokens", {}, token=t))[:2] for t in (operator, viewer)]
    assert [(403, "forbidden"), (403, "forbidden")] == refused
    status, created = api.request("POST", "/api/v1/enrollment-tokens", {})
    assert (201, True) == (status, created["token"].startswith("bhe_"))
    assert "succeeded" == api.wait_done(job["id"])["state"]


# --- API: malformed job submissions ------------------------------------------------------------


BAD_SUBMISSIONS: list[tuple[str, Any, str, str]] = [
    # (case, body, error code, what the message must name: alternatives split by "|")
    ("invalid-json", b'{"plugin": "echo", "params": {}', "invalid_json", "JSON"),
    ("empty-body", b"", "invalid_json", "empty"),
    ("json-array", [{"plugin": "echo", "params": {}}], "invalid_request", "object"),
    ("missing-plugin", {"params": {}}, "invalid_request", "plugin"),
    ("missing-params", {"plugin": "echo"}, "invalid_request", "params"),
    ("params-not-object", {"plugin": "echo", "params": ["count", 1]}, "invalid_request", "params"),
    ("unknown-field", {"plugin": "echo", "params": {}, "colour": "red"}, "invalid_request", "colour"),
    ("timeout-negative", {"plugin": "echo", "params": {}, "timeout_s": -1}, "invalid_request", "timeout_s"),
    ("max-attempts-0", {"plugin": "echo", "params": {}, "max_attempts": 0}, "invalid_request", "max_attempts"),
    ("max-attempts-101", {"plugin": "echo", "params": {}, "max_attempts": 101}, "invalid_request", "max_attempts"),
    ("invalid-utf8", b'{"plugin": "echo", "params": {"records": [{"a": "\xff\xfe"}]}}', "invalid_json", "UTF-8"),
    (
        "nested-5000-deep",
        b'{"plugin": "echo", "params": {"records": [{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}]}}",
        "invalid_json",
        "deep|depth|nest",
    ),
]


@pytest.mark.parametrize(
    ("body", "code", "names"), [case[1:] for case in BAD_SUBMISSIONS], ids=[case[0] for case in BAD_SUBMISSIONS]
)
def test_malformed_submission_is_a_422_naming_the_fault(shared: Shared, body: Any, code: str, names: str) -> None:
    """A malformed POST /api/v1/jobs is a 422 with {"error": {code, message}} naming the fault; no job."""
    api = shared.api
    before = job_count(api)
    status, actual_code, message = error_of(*api.request("POST", "/api/v1/jobs", body))
    assert (422, code) == (status, actual_code), message
    assert True is any(name.lower() in message.lower() for name in names.split("|")), message
    assert before == job_count(api)
    assert_serving(shared.control)


def _raw_post(control: ControlPlane, token: str, head_extra: str, body_chunks: list[bytes]) -> tuple[int, Any]:
    """POST /api/v1/jobs over a bare TLS socket; send what is given, then read the whole answer."""
    assert control.context is not None
    raw = socket.create_connection(("127.0.0.1", control.port), timeout=scaled(10))
    with control.context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        head = (
            f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\n{head_extra}\r\n"
        )
        sock.sendall(head.encode())
        for chunk in body_chunks:
            sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head_bytes, _, rest = answer.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return status, json.loads(rest[: _length(answer)])


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def test_body_over_limit_announced_by_content_length_is_413(shared: Shared) -> None:
    """A Content-Length over 1 MiB is answered 413 'too_large' before any of the body is read."""
    status, body = _raw_post(shared.control, shared.control.admin_token, f"Content-Length: {2 * MiB}\r\n", [])
    assert (413, "too_large") == error_of(status, body)[:2]
    assert_serving(shared.control)


def test_chunked_body_over_limit_is_413(shared: Shared) -> None:
    """A chunked body that grows past 1 MiB is answered 413 'too_large' as soon as it does."""
    chunk = b"x" * 65536
    chunks = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"] * 17  # 1 MiB + 64 KiB, never terminated
    status, body = _raw_post(shared.control, shared.control.admin_token, "Transfer-Encoding: chunked\r\n", chunks)
    assert (413, "too_large") == error_of(status, body)[:2]
    assert_serving(shared.control)


@pytest.mark.parametrize("size", [MiB + 1024, 8 * MiB], ids=["1MiB+1KiB", "8MiB"])
def test_body_over_limit_reaches_an_ordinary_client_as_413(shared: Shared, size: int) -> None:
    """A client that sends its whole over-limit body before reading still gets the 413, every time."""
    api = shared.api
    body = json.dumps({"plugin": "echo", "params": {"pad": "x" * size}}).encode()
    outcomes = []
    for _ in range(10):
        try:
            status, answer = api.request("POST", "/api/v1/jobs", body)
            outcomes.append(error_of(status, answer)[:2])
        except OSError as exc:  # urllib's URLError wraps the broken pipe or reset
            outcomes.append((0, repr(exc)))
    assert [(413, "too_large")] * 10 == outcomes
    assert_serving(shared.control)


# --- API: params checked against the live agents' plugins --------------------------------------


def test_unknown_plugin_is_422_naming_the_offered_plugins(shared: Shared) -> None:
    """With an agent connected, an unknown plugin is a 422 'unknown_plugin' listing what is offered."""
    before = job_count(shared.api)
    status, code, message = error_of(*shared.api.request("POST", "/api/v1/jobs", {"plugin": "nosuch", "params": {}}))
    assert (422, "unknown_plugin") == (status, code)
    assert (True, True, True) == ("nosuch" in message, "echo" in message, "rest" in message), message
    assert before == job_count(shared.api)


@pytest.mark.parametrize(
    ("plugin", "params", "names"),
    [
        ("echo", {"count": "x"}, "params.count"),
        ("rest", {"connection": "internal"}, "path"),
        ("rest", {"path": "/"}, "connection"),
    ],
    ids=["echo-count-not-int", "rest-no-path", "rest-no-connection"],
)
def test_params_not_fitting_the_plugin_schema_are_422_invalid_params(
    shared: Shared, plugin: str, params: dict[str, Any], names: str
) -> None:
    """Params that do not fit the plugin's schema are a 422 'invalid_params' naming the param."""
    before = job_count(shared.api)
    status, code, message = error_of(*shared.api.request("POST", "/api/v1/jobs", {"plugin": plugin, "params": params}))
    assert (422, "invalid_params") == (status, code)
    assert names in message, message
    assert before == job_count(shared.api)


@pytest.mark.parametrize(
    ("connection", "names"),
    [("nope", ["nope"]), ("smoke", ["smoke", "echo"])],
    ids=["unknown-profile", "profile-of-another-plugin"],
)
def test_job_naming_a_profile_the_agent_cannot_use_fails_unknown_connection(
    shared: Shared, connection: str, names: list[str]
) -> None:
    """A rest job naming an unknown profile, or another plugin's, is accepted then fails at once, saying why."""
    api = shared.api
    job = api.submit("rest", {"connection": connection, "path": "/"}, max_attempts=3)
    done = api.wait_done(job["id"], timeout=20)
    assert ("failed", "unknown_connection", 1, 0) == (
        done["state"],
        done["error"]["code"],
        done["attempt"],
        done["record_count"],
    ), done
    assert [True] * len(names) == [name in done["error"]["message"] for name in names], done["error"]
    assert [] == api.records(job["id"])


def test_job_for_a_plugin_no_agent_offers_stays_queued_and_can_be_cancelled(
    control: ControlPlane, agent_factory: AgentFactory
) -> None:
    """Queued before any agent, an unknown-plugin job is never offered to an agent lacking it; cancel ends it."""
    api = control.api()
    job = api.submit("nosuch", {"anything": 1})
    assert "queued" == job["state"]
    agent_factory(control)
    wait_connected(api, ["agent-1"])
    # The dispatcher looks at the cluster's queue on each submit, connect and completion:
    # two later jobs submitted and finished mean it has passed the unknown-plugin job over
    # at least four times with this agent's credit free.
    for _ in range(2):
        assert "succeeded" == api.wait_done(api.submit("echo", {"count": 1})["id"], timeout=20)["state"]
    held = api.job(job["id"])
    assert ("queued", 0, None) == (held["state"], held["attempt"], held["agent"])
    status, code, _ = error_of(*api.request("POST", "/api/v1/jobs", {"plugin": "nosuch", "params": {}}))
    assert (422, "unknown_plugin") == (status, code)
    status, cancelled = api.request("POST", f"/api/v1/jobs/{job['id']}/cancel")
    assert (200, "cancelled") == (status, cancelled["state"])
    assert "cancelled" == api.job(job["id"])["state"]


# --- API: reading jobs, queries, routes --------------------------------------------------------


@pytest.fixture(scope="module")
def finished_job(shared: Shared) -> str:
    api = shared.api
    job = api.submit("echo", {"count": 3})
    assert "succeeded" == api.wait_done(job["id"])["state"]
    return str(job["id"])


def test_unknown_job_id_is_404_job_not_found(shared: Shared) -> None:
    """GET of a job id that does not exist is a 404 'job_not_found' naming the id."""
    status, code, message = error_of(*shared.api.request("GET", "/api/v1/jobs/0123456789abcdef"))
    assert (404, "job_not_found") == (status, code)
    assert "0123456789abcdef" in message, message


def test_records_of_a_running_job_are_409_job_not_finished(shared: Shared) -> None:
    """GET records of a running job is a 409 'job_not_finished'; the job itself is untouched."""
    api = shared.api
    job = api.submit("echo", {"sleep_s": 60, "count": 1})
    wait_until(lambda: api.job(job["id"])["state"] == "running", 20, "job running")
    status, code, _ = error_of(*api.request("GET", f"/api/v1/jobs/{job['id']}/records"))
    assert (409, "job_not_finished") == (status, code)
    assert "running" == api.job(job["id"])["state"]
    assert 200 == api.request("POST", f"/api/v1/jobs/{job['id']}/cancel")[0]
    assert "cancelled" == api.wait_done(job["id"], timeout=20)["state"]


@pytest.mark.parametrize(
    ("suffix", "names"),
    [
        ("?wait=abc", "wait"),
        ("?wait=-1", "wait"),
        ("?wait=nan", "wait"),
        ("/records?limit=0", "limit"),
        ("/records?after=x", "after"),
    ],
    ids=["wait-abc", "wait-negative", "wait-nan", "limit-0", "after-x"],
)
def test_bad_query_values_are_422_naming_the_parameter(
    shared: Shared, finished_job: str, suffix: str, names: str
) -> None:
    """A query parameter that is not a number in range is a 422 naming that parameter."""
    status, code, message = error_of(*shared.api.request("GET", f"/api/v1/jobs/{finished_job}{suffix}"))
    assert (422, "invalid_request") == (status, code)
    assert names in message, message


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/v1/nothing-here", 404, "not_found"),
        ("GET", "/api/v2/jobs", 404, "not_found"),
        ("DELETE", "/api/v1/jobs", 405, "method_not_allowed"),
        ("PUT", "/healthz", 405, "method_not_allowed"),
        ("GET", "/api/v1/enrollment-tokens", 405, "method_not_allowed"),
    ],
)
def test_unknown_routes_and_methods_answer_json(shared: Shared, method: str, path: str, status: int, code: str) -> None:
    """An unknown route is a JSON 404 and a wrong method a JSON 405."""
    assert (status, code) == error_of(*shared.api.request(method, path))[:2]


# --- API: params nested deeper than the decoders go ---------------------------------------------

# The job API refuses params (and sinks) nested more than 32 levels (docs/operations.md):
# ``_nested(depth)`` is ``depth`` arrays inside params -> records -> one record, 3 levels more.
API_MAX_DEPTH = 32
WRAPPERS = 3
DEEPEST_ACCEPTED = API_MAX_DEPTH - WRAPPERS
UNDER_LIMIT = range(DEEPEST_ACCEPTED - 2, DEEPEST_ACCEPTED + 1)  # 27, 28, 29: accepted
OVER_LIMIT = range(DEEPEST_ACCEPTED + 1, DEEPEST_ACCEPTED + 4)  # 30, 31, 32: refused too_deep
# Near the interpreter's recursion limit (1000), where the server's decoder gives up before
# the depth check: still a clear 422, never a 500.
NEAR_RECURSION_LIMIT = (900, 960, 996, 1000, 1100)


def _nested(depth: int) -> bytes:
    """An echo job whose one record holds a value nested ``depth`` arrays deep."""
    return b'{"plugin": "echo", "params": {"records": [{"a": ' + b"[" * depth + b"]" * depth + b"}]}}"


def _nested_value(depth: int) -> list[Any]:
    """The value ``_nested(depth)`` puts under "a", as Python data."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


Outcome = tuple[str, int, str]  # state, attempt, error code


def _settle(
    api: Api, job_ids: dict[int, str], timeout: float, broken: Callable[[], str] = lambda: ""
) -> dict[int, Outcome]:
    """Wait until every job ends; depth -> (state, attempt, error code). Fails at once when
    ``broken()`` says why the wait is pointless (an agent lost its session), else on timeout."""
    outcome: dict[int, Outcome] = {}

    def settled() -> bool:
        assert "" == broken(), broken()
        for depth, job_id in job_ids.items():
            if depth not in outcome or outcome[depth][0] not in TERMINAL:
                job = api.job(job_id)
                outcome[depth] = (job["state"], job["attempt"], (job["error"] or {}).get("code", ""))
        return all(o[0] in TERMINAL for o in outcome.values())

    wait_until(settled, timeout, f"jobs {sorted(job_ids)} to end (so far {outcome})", interval=0.1)
    return outcome


@contextlib.contextmanager
def deep_json() -> Iterator[None]:
    """Let this process's json module read answers that echo the deep params back."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def _submit_by_depth(api: Api, depths: Iterable[int]) -> dict[int, tuple[int, Any]]:
    return {depth: api.request("POST", "/api/v1/jobs", _nested(depth)) for depth in depths}


def _assert_refused_too_deep(answers: dict[int, tuple[int, Any]]) -> None:
    """Every answer is the API's 422 'too_deep' naming the limit."""
    refused = {depth: error_of(*answer) for depth, answer in answers.items()}
    assert {d: (422, "too_deep") for d in answers} == {d: e[:2] for d, e in refused.items()}, refused
    assert all(f"{API_MAX_DEPTH} levels" in e[2] for e in refused.values()), refused


def _assert_ran_once_intact(api: Api, accepted: dict[int, str], outcome: dict[int, Outcome]) -> None:
    """Each accepted job succeeded on its first attempt, its one record as deep as it was sent."""
    assert {d: ("succeeded", 1, "") for d in accepted} == outcome
    with deep_json():
        records = {depth: api.records(job_id) for depth, job_id in accepted.items()}
    assert {d: [{"a": _nested_value(d)}] for d in accepted} == records


def _one_session(agent: Agent) -> str:
    """'' while the agent has connected exactly once; otherwise why not (for ``_settle``)."""
    log = agent.log_text()
    connects = log.count("connected to wss://")
    ended = [line for line in log.splitlines() if "ended the session" in line]
    return "" if connects <= 1 else f"the agent connected {connects} times; sessions ended: {ended[:3]}"


def test_params_at_the_depth_limit_run_and_deeper_ones_are_422_too_deep(
    control: ControlPlane, agent_factory: AgentFactory
) -> None:
    """With an agent connected: params nested up to the API's limit of 32 run once, intact;
    one level deeper is a 422 'too_deep' naming the limit; near the interpreter's recursion
    limit still a 422, never a 500; the agent keeps its one session."""
    agent = agent_factory(control)
    api = control.api()
    wait_connected(api, ["agent-1"])
    answers = _submit_by_depth(api, [*UNDER_LIMIT, *OVER_LIMIT])
    accepted = {d: b["id"] for d, (s, b) in answers.items() if s == 201}
    assert set(UNDER_LIMIT) == set(accepted), {d: a[0] for d, a in answers.items()}
    _assert_refused_too_deep({d: answers[d] for d in OVER_LIMIT})
    near = {depth: error_of(*api.request("POST", "/api/v1/jobs", _nested(depth)))[:2] for depth in NEAR_RECURSION_LIMIT}
    # Which of the two refuses a given depth (the decoder or the depth check) is the server's
    # business; that it is a 422 with one of these codes is the contract.
    assert {} == {d: e for d, e in near.items() if e not in ((422, "too_deep"), (422, "invalid_json"))}
    _assert_ran_once_intact(api, accepted, _settle(api, accepted, 20, lambda: _one_session(agent)))
    assert 1 == agent.log_text().count("connected to wss://")
    assert_serving(control)


def test_params_at_the_depth_limit_queued_before_the_agent_run_once_on_its_session(
    control: ControlPlane, agent_factory: AgentFactory
) -> None:
    """With no agent connected (so no schema check), params up to the depth limit are queued
    and deeper ones refused 'too_deep'; when an agent connects each queued job runs once,
    intact, and the agent keeps its one session."""
    api = control.api()
    answers = _submit_by_depth(api, [*UNDER_LIMIT, *OVER_LIMIT])
    accepted = {d: b["id"] for d, (s, b) in answers.items() if s == 201}
    assert set(UNDER_LIMIT) == set(accepted), {d: a[0] for d, a in answers.items()}
    assert {d: "queued" for d in accepted} == {d: api.job(job_id)["state"] for d, job_id in accepted.items()}
    _assert_refused_too_deep({d: answers[d] for d in OVER_LIMIT})
    agent = agent_factory(control)
    wait_connected(api, ["agent-1"])
    _assert_ran_once_intact(api, accepted, _settle(api, accepted, 20, lambda: _one_session(agent)))
    assert 1 == agent.log_text().count("connected to wss://")
    assert [] == [line for line in control.log_text().splitlines() if "failed" in line and "gateway" in line]


class DeepJsonServer(ThreadingHTTPServer):
    served: list[int]  # the depths it answered, in order


class DeepJson(BaseHTTPRequestHandler):
    """GET /?depth=N answers {"items": [{"a": [[...]]}]}, "a" nested N arrays deep."""

    server: DeepJsonServer

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        depth = int(self.path.partition("depth=")[2])
        self.server.served.append(depth)
        body = b'{"items": [{"a": ' + b"[" * depth + b"]" * depth + b"}]}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
        """Quiet: pytest shows what matters."""


@pytest.fixture
def deep_json_server() -> Iterator[DeepJsonServer]:
    """A real HTTP server on loopback answering JSON as deep as asked."""
    server = DeepJsonServer(("127.0.0.1", 0), DeepJson)
    server.served = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# Records are not params: a source can answer JSON as deep as it likes, and the agent passes
# it on. Around the interpreter's recursion limit each of the agent's decoder, its encoder
# and the control plane's frame decoder gives up at a slightly different depth.
RECORD_DEPTHS = [50, *range(900, 1001, 4), 2000]  # 50: well within the SDK's MAX_RECORD_DEPTH


def test_records_nested_near_the_recursion_limit_never_break_the_agents_session(
    control: ControlPlane, agent_factory: AgentFactory, deep_json_server: DeepJsonServer
) -> None:
    """A rest source answering JSON nested ~900-1000 (and 2000) deep: each job ends on its
    first attempt, failed with ``bad_record`` (deeper than the SDK's MAX_RECORD_DEPTH) or
    ``bad_response`` (deeper than the decoder reaches), while one nested 50 deep arrives intact;
    the agent keeps its one session, and a job after them still runs."""
    url = f"http://127.0.0.1:{deep_json_server.server_port}"
    profile = f'[connections.deep]\nplugin = "rest"\nbase_url = "{url}"\n'
    agent = agent_factory(control, extra=profile)
    api = control.api()
    wait_connected(api, ["agent-1"])
    jobs = {
        depth: api.submit("rest", {"connection": "deep", "path": f"/?depth={depth}", "records_path": "items"})["id"]
        for depth in RECORD_DEPTHS
    }
    outcome = _settle(api, jobs, 30, lambda: _one_session(agent))
    # The premise: each job fetched its deep answer (once: a second fetch is a second attempt).
    assert sorted(RECORD_DEPTHS) == sorted(deep_json_server.served)
    assert {} == {d: o for d, o in outcome.items() if o[1] != 1 or (o[0] == "failed") != bool(o[2])}
    succeeded = {d: jobs[d] for d, o in outcome.items() if o[0] == "succeeded"}
    assert [50] == sorted(succeeded), outcome
    assert {} == {d: o for d, o in outcome.items() if d != 50 and o[2] not in ("bad_record", "bad_response")}
    with deep_json():
        records = {d: api.records(job_id) for d, job_id in succeeded.items()}
    assert {d: [{"a": _nested_value(d)}] for d in succeeded} == records
    assert "succeeded" == api.wait_done(api.submit("echo", {"count": 1})["id"], timeout=20)["state"]
    assert 1 == agent.log_text().count("connected to wss://")
    assert_serving(control)


# --- agent channel (websocket) ------------------------------------------------------------------


@dataclass
class Channel:
    frames: list[dict[str, Any]]  # what the control plane sent, the challenge first
    code: int | None
    reason: str


async def _agent_channel(
    control: ControlPlane,
    then: Callable[[dict[str, Any]], list[bytes | str]] | None,
    subprotocols: list[str] | None = None,
    identity: ScriptedIdentity | None = None,
) -> Channel:
    """Open the agent channel (with ``identity``'s client certificate, or none); after the
    challenge send ``then(challenge)``; read until it closes."""
    offered = None if subprotocols is None else [Subprotocol(p) for p in subprotocols]
    frames: list[dict[str, Any]] = []
    context = identity.context() if identity is not None else control.context
    async with asyncio.timeout(scaled(20)):
        async with connect(
            f"wss://127.0.0.1:{control.port}/api/v1/agent/connect",
            ssl=context,
            subprotocols=offered,
            max_size=None,
            open_timeout=scaled(10),
            ping_interval=None,
        ) as ws:
            try:
                if then is not None:
                    frames.append(json.loads(await ws.recv()))
                    for frame in then(frames[0]):
                        await ws.send(frame)
                while True:
                    frames.append(json.loads(await ws.recv()))
            except ConnectionClosed as exc:
                closed = exc.rcvd
                return Channel(frames, closed.code if closed else None, closed.reason if closed else "")


def _hello(agent: str, challenge: dict[str, Any], key: Ed25519PrivateKey, binding: str = "") -> str:
    """A well-formed hello for ``agent`` in cluster default, the challenge signed with ``key``."""
    signed = hello_bytes(challenge["nonce"], agent, "default", binding)
    signature = base64.b64encode(key.sign(signed)).decode()
    return json.dumps(
        {
            "type": "hello",
            "agent": agent,
            "cluster": "default",
            "signature": signature,
            "capacity": 4,
            "plugins": [{"name": "echo"}],
        }
    )


@pytest.mark.parametrize("subprotocols", [None, ["bridgehead.v999"]], ids=["none", "v999"])
async def test_channel_without_our_subprotocol_is_closed_4001(shared: Shared, subprotocols: list[str] | None) -> None:
    """No subprotocol, or an unknown version, is closed with 4001 and a reason naming bridgehead.v1."""
    channel = await _agent_channel(shared.control, None, subprotocols)
    assert 4001 == channel.code
    assert SUBPROTOCOL in channel.reason, channel.reason
    assert_serving(shared.control)


@pytest.mark.parametrize(
    ("frames", "code", "error"),
    [
        ([b"\x00\xff garbage \x01"], 1002, "malformed_message"),
        (["{not json"], 1002, "malformed_message"),
        (
            [json.dumps({"type": "records", "job_id": "j1", "attempt": 1, "seq": 1, "records": [{"n": 0}]})],
            1002,
            "unexpected_message",
        ),
        ([json.dumps({"type": "hello", "agent": "x"})], 1002, "invalid_message"),
    ],
    ids=["garbage-bytes", "garbage-text", "records-before-hello", "hello-missing-fields"],
)
async def test_channel_protocol_violations_are_closed_1002(
    shared: Shared, frames: list[bytes | str], code: int, error: str
) -> None:
    """After the challenge, garbage or an out-of-order message gets an error frame and close 1002."""
    channel = await _agent_channel(shared.control, lambda _challenge: frames, [SUBPROTOCOL])
    assert "challenge" == channel.frames[0]["type"]
    assert (code, [error]) == (channel.code, [f["code"] for f in channel.frames[1:] if f["type"] == "error"])
    assert error in channel.reason, channel.reason
    assert_serving(shared.control)


@pytest.mark.parametrize("size", [4 * MiB + 1, 8 * MiB], ids=["4MiB+1", "8MiB"])
async def test_channel_frame_over_4_mib_is_closed_1009(shared: Shared, size: int) -> None:
    """A frame over the 4 MiB message limit closes the connection with 1009."""
    channel = await _agent_channel(shared.control, lambda _challenge: [b"x" * size], [SUBPROTOCOL])
    assert 1009 == channel.code, channel
    assert_serving(shared.control)


async def test_hello_without_a_client_certificate_is_closed_4003(shared: Shared) -> None:
    """A well-formed, signed hello over TLS without a client certificate is closed with 4003."""
    key = Ed25519PrivateKey.generate()
    channel = await _agent_channel(
        shared.control, lambda challenge: [_hello("ghost-agent", challenge, key)], [SUBPROTOCOL]
    )
    assert 4003 == channel.code
    assert "no client certificate" in channel.reason, channel.reason
    assert_serving(shared.control)


async def test_hello_naming_another_agent_than_the_certificate_is_closed_4003(shared: Shared) -> None:
    """An enrolled agent's certificate with a hello (correctly signed) naming another agent: 4003."""
    identity = scripted_enroll(shared.control, "ws-honest")
    channel = await _agent_channel(
        shared.control,
        lambda challenge: [_hello(SHARED_AGENT, challenge, identity.key)],
        [SUBPROTOCOL],
        identity=identity,
    )
    assert 4003 == channel.code
    assert "certificate names" in channel.reason, channel.reason
    assert_serving(shared.control)


@pytest.mark.parametrize("signature", ["other-key", "not-base64"])
async def test_hello_with_a_wrong_signature_is_closed_4003(
    shared: Shared, agent_factory: AgentFactory, signature: str
) -> None:
    """A hello with the enrolled agent's certificate but signed with another key, or not a
    signature at all, is closed 4003."""
    identity = scripted_enroll(shared.control, f"ws-enrolled-{signature}")

    def frames(challenge: dict[str, Any]) -> list[bytes | str]:
        hello = json.loads(_hello(identity.name, challenge, Ed25519PrivateKey.generate()))
        if signature == "not-base64":
            hello["signature"] = "!!! not base64 !!!"
        return [json.dumps(hello)]

    channel = await _agent_channel(shared.control, frames, [SUBPROTOCOL], identity=identity)
    assert 4003 == channel.code
    assert "signature" in channel.reason, channel.reason
    assert_serving(shared.control)


async def test_hello_impersonating_a_connected_agent_does_not_disturb_it(shared: Shared) -> None:
    """A wrongly signed hello naming the connected agent is closed 4003; the real agent keeps its session."""
    sessions = shared.agent.log_text().count("connected to wss://")
    assert sessions >= 1  # the premise: the agent it names is connected
    channel = await _agent_channel(
        shared.control,
        lambda challenge: [_hello(SHARED_AGENT, challenge, Ed25519PrivateKey.generate())],
        [SUBPROTOCOL],
    )
    assert 4003 == channel.code
    api = shared.api
    status, agents = api.request("GET", "/api/v1/agents")
    assert (200, True) == (status, {a["name"]: a["connected"] for a in agents}[SHARED_AGENT])
    job = api.submit("echo", {"count": 2})
    assert ("succeeded", SHARED_AGENT) == tuple(api.wait_done(job["id"], timeout=20)[k] for k in ("state", "agent"))
    # Kicked off and back, it would have run the job all the same: count its sessions.
    assert sessions == shared.agent.log_text().count("connected to wss://")


# --- enrolment and the agent's CLI --------------------------------------------------------------


def agent_toml(directory: Path, url: str, extra: str = "", name: str = "cli-agent") -> Path:
    """Write a valid agent config (plus ``extra``) into ``directory``; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "agent.toml"
    path.write_text(
        f'[agent]\nname = "{name}"\ncluster = "default"\ndata_dir = "{directory / "data"}"\n'
        f'max_concurrent_jobs = 8\n\n[control]\nurl = "{url}"\n{extra}'
    )
    return path


def enroll(config: Path, token: str) -> Any:
    return run_cli("bridgehead.agent.cli", "enroll", "--config", str(config), "--token", token, check=False)


def test_enroll_with_a_wrong_token_exits_3(shared: Shared, tmp_path: Path) -> None:
    """A token the control plane never issued: exit 3, one line naming the token problem, no identity."""
    config = agent_toml(tmp_path, shared.control.url)
    pin = shared.control.enrollment_token().split(".")[1]  # the right pin: only the secret is wrong
    result = enroll(config, f"bhe_this-token-was-never-issued.{pin}")
    assert 3 == result.returncode, result.stderr
    assert "token" in one_line(result)
    assert False is (tmp_path / "data" / "identity.json").exists()


def test_enroll_twice_with_one_token_exits_3_and_keeps_the_identity(shared: Shared, tmp_path: Path) -> None:
    """The second use of a one-time token fails with exit 3 and leaves the first identity as it was."""
    config = agent_toml(tmp_path, shared.control.url, name="cli-twice")
    token = shared.control.enrollment_token()
    assert 0 == enroll(config, token).returncode
    identity = (tmp_path / "data" / "identity.json").read_bytes()
    result = enroll(config, token)
    assert 3 == result.returncode, result.stderr
    assert "used" in one_line(result)
    assert identity == (tmp_path / "data" / "identity.json").read_bytes()


def test_enroll_with_an_expired_token_exits_3(shared: Shared, tmp_path: Path) -> None:
    """A token past its --ttl fails with exit 3 and a one-line reason saying it expired."""
    config = agent_toml(tmp_path, shared.control.url, name="cli-late")
    token = shared.control.enrollment_token(ttl=1)
    time.sleep(1.5)  # not a wait for an event: the passing of the token's 1 s TTL is the condition
    result = enroll(config, token)
    assert 3 == result.returncode, result.stderr
    assert "expired" in one_line(result)


def test_enroll_with_no_control_plane_listening_fails_clearly(tmp_path: Path) -> None:
    """With nothing listening, enrol exits non-zero with one line saying it could not reach the URL."""
    port = free_port()
    config = agent_toml(tmp_path, f"http://127.0.0.1:{port}")
    result = enroll(config, "bhe_whatever-but-well-formed." + "0" * 64)
    line = one_line(result)
    assert (True, True) == (result.returncode != 0, f"127.0.0.1:{port}" in line), result.stderr
    assert "reach" in line, line
    assert False is (tmp_path / "data" / "identity.json").exists()


UNSET_VAR = "BRIDGEHEAD_TEST_SURELY_UNSET_PASSWORD"
BAD_CONFIGS: list[tuple[str, str | None, str]] = [
    # (case, what to append to a valid config, or None for "no file"; the key the error must name)
    ("missing-file", None, ""),
    ("invalid-toml", "[connections.broken\n", ""),
    ("max-jobs-not-int", "", "agent.max_concurrent_jobs"),
    ("unknown-key", "\n[limits]\ncolour = 1\n", "limits.colour"),
    ("http-non-loopback", "", "control.url"),
    ("rest-without-base-url", '\n[connections.api]\nplugin = "rest"\n', "connections.api.base_url"),
    (
        "password-env-unset",
        f'\n[connections.api]\nplugin = "rest"\nbase_url = "http://127.0.0.1:9"\ncredential = "svc"\n\n'
        f'[credentials.svc]\nusername = "svc"\npassword_env = "{UNSET_VAR}"\n',
        "credentials.svc.password_env",
    ),
]


@pytest.mark.parametrize(("extra", "key"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_run_with_a_bad_config_exits_2_naming_file_and_key(tmp_path: Path, extra: str | None, key: str) -> None:
    """`run` on a bad config exits 2 with one stderr line naming the file and the dotted key."""
    config = agent_toml(tmp_path, f"http://127.0.0.1:{free_port()}", extra or "")
    text = config.read_text()
    if extra is None:
        config.unlink()
    elif key == "agent.max_concurrent_jobs":
        config.write_text(text.replace("max_concurrent_jobs = 8", 'max_concurrent_jobs = "eight"'))
    elif key == "control.url":
        config.write_text(text.replace('url = "http://127.0.0.1', 'url = "http://192.0.2.10'))
    result = run_cli("bridgehead.agent.cli", "run", "--config", str(config), check=False)
    line = one_line(result)
    assert 2 == result.returncode, result.stderr
    assert (True, True) == (str(config) in line, key in line), line
    if key == "credentials.svc.password_env":
        assert UNSET_VAR in line, line


def test_run_before_enroll_exits_2_saying_to_enroll(tmp_path: Path) -> None:
    """`run` with a valid config but no identity exits 2 with one line telling to enrol first."""
    config = agent_toml(tmp_path, f"http://127.0.0.1:{free_port()}")
    result = run_cli("bridgehead.agent.cli", "run", "--config", str(config), check=False)
    assert 2 == result.returncode, result.stderr
    assert "enroll" in one_line(result)


@pytest.mark.parametrize(
    ("toml", "key"),
    [("[server]\ncolour = 1\n", "server.colour"), ('[server]\nheartbeat_s = "fast"\n', "server.heartbeat_s")],
    ids=["unknown-key", "wrong-type"],
)
def test_control_serve_with_a_bad_config_exits_2_naming_the_key(tmp_path: Path, toml: str, key: str) -> None:
    """`serve` with a bad --config exits 2 with one line naming the file and the dotted key."""
    config = tmp_path / "control.toml"
    config.write_text(toml)
    result = run_cli(
        "bridgehead.control.cli",
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--config",
        str(config),
        check=False,
    )
    line = one_line(result)
    assert 2 == result.returncode, result.stderr
    assert (True, True) == (str(config) in line, key in line), line


def test_control_serve_on_a_port_in_use_exits_non_zero(shared: Shared, tmp_path: Path) -> None:
    """`serve --listen` on a port another server holds exits non-zero with one line naming the port."""
    result = run_cli(
        "bridgehead.control.cli",
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--listen",
        f"127.0.0.1:{shared.control.port}",
        check=False,
    )
    line = one_line(result)
    assert (True, True) == (result.returncode != 0, str(shared.control.port) in line), result.stderr
    assert "in use" in line, line
    assert_serving(shared.control)


# --- secrets ------------------------------------------------------------------------------------

SECRET = "s3cr3t-Vault-Pw-9f2c71e4"  # noqa: S105 - a fake secret, looked for in logs and errors


class EchoServer(ThreadingHTTPServer):
    seen: list[str]  # the Authorization headers it received


class EchoCredentials(BaseHTTPRequestHandler):
    """A careless target: answers with the request's Authorization header in its body and in
    a header; /denied with a 401, anything else a 200."""

    server: EchoServer

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        given = self.headers.get("Authorization", "")
        self.server.seen.append(given)
        body = f"bad credentials: {given}".encode()
        self.send_response(401 if self.path.startswith("/denied") else 200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("X-Echo", given)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
        """Quiet: pytest shows what matters."""


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    """A real HTTP server on loopback that echoes the credentials it is sent."""
    server = EchoServer(("127.0.0.1", 0), EchoCredentials)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_credential_secret_echoed_by_the_target_never_reaches_records_errors_or_logs(
    shared: Shared, agent_factory: AgentFactory, echo_server: EchoServer
) -> None:
    """A target echoes the Basic credentials it was sent (in its body and a header): the
    password, in clear or as the header's base64, reaches no job error, record or log."""
    extra = (
        f'[connections.locked]\nplugin = "rest"\nbase_url = "http://127.0.0.1:{echo_server.server_port}"\n'
        'credential = "svc"\n\n[credentials.svc]\nusername = "svc"\npassword_env = "BRIDGEHEAD_TEST_PW"\n'
    )
    agent = agent_factory(
        shared.control,
        name="vault-agent",
        cluster="vault",
        extra=extra,
        env={"BRIDGEHEAD_TEST_PW": SECRET},
        start=False,
    )
    # Debug logging widens what could leak.
    agent.config.write_text(
        agent.config.read_text().replace('cluster = "vault"', 'cluster = "vault"\nlog_level = "debug"')
    )
    agent.start()
    api = shared.api
    wait_connected(api, ["vault-agent"])
    denied = api.submit(
        "rest", {"connection": "locked", "path": "/denied", "fail_on_status": True}, cluster="vault", max_attempts=1
    )
    echoed = api.submit("rest", {"connection": "locked", "path": "/echo"}, cluster="vault", max_attempts=1)
    denied, echoed = api.wait_done(denied["id"], timeout=30), api.wait_done(echoed["id"], timeout=30)
    basic = base64.b64encode(f"svc:{SECRET}".encode()).decode()
    # The premise: the secret really went out and came back, twice.
    assert [f"Basic {basic}"] * 2 == echo_server.seen
    assert ("failed", "http_status") == (denied["state"], denied["error"]["code"]), denied
    assert "bad credentials: " in denied["error"]["message"], denied["error"]  # the echo is quoted...
    [record] = api.records(echoed["id"])
    assert (200, True) == (record["status"], record["body"].startswith("bad credentials: ")), record
    agent.stop()
    shown = {
        "error": json.dumps(denied),
        "record": json.dumps(record),
        "agent log": agent.log_text(),
        "control log": shared.control.log_text(),
    }
    assert {} == {where: form for where, text in shown.items() for form in (SECRET, basic) if form in text}


# --- and after bad input of every kind ----------------------------------------------------------


def _send_bad_input_of_every_kind(shared: Shared) -> None:
    """One of each kind of bad input this file tries, each answered as it must be (the premise
    of the tests below, which must not rely on the tests above having run)."""
    api = shared.api
    refused = {
        "invalid-json": error_of(*api.request("POST", "/api/v1/jobs", b'{"plugin": '))[:2],
        "too-deep": error_of(*api.request("POST", "/api/v1/jobs", _nested(5000)))[:2],
        "unknown-plugin": error_of(*api.request("POST", "/api/v1/jobs", {"plugin": "nosuch", "params": {}}))[:2],
        "no-token": error_of(*Api(shared.control.url, None).request("GET", "/api/v1/jobs"))[:2],
        "bad-query": error_of(*api.request("GET", "/api/v1/jobs?limit=nan"))[:2],
        "no-route": error_of(*api.request("GET", "/api/v1/nothing-here"))[:2],
        "over-limit": error_of(*api.request("POST", "/api/v1/jobs", b"x" * (MiB + 1)))[:2],
    }
    assert {
        "invalid-json": (422, "invalid_json"),
        "too-deep": (422, "invalid_json"),
        "unknown-plugin": (422, "unknown_plugin"),
        "no-token": (401, "unauthorized"),
        "bad-query": (422, "invalid_request"),
        "no-route": (404, "not_found"),
        "over-limit": (413, "too_large"),
    } == refused
    garbage = asyncio.run(_agent_channel(shared.control, lambda _challenge: [b"\x00\xff garbage"], [SUBPROTOCOL]))
    impostor = asyncio.run(
        _agent_channel(
            shared.control,
            lambda challenge: [_hello(SHARED_AGENT, challenge, Ed25519PrivateKey.generate())],
            [SUBPROTOCOL],
        )
    )
    assert (1002, 4003) == (garbage.code, impostor.code)


def test_after_bad_input_of_every_kind_the_control_plane_still_serves(
    shared: Shared, agent_factory: AgentFactory
) -> None:
    """After bad input of every kind: /healthz is 200, the shared agent kept its one session
    (an impostor's hello in its name did not end it), jobs run, and a new agent connects."""
    _send_bad_input_of_every_kind(shared)
    api = shared.api
    status, health = api.request("GET", "/healthz")
    assert (200, "ok") == (status, health["status"])
    job = api.submit("echo", {"count": 3})
    done = api.wait_done(job["id"], timeout=20)
    assert ("succeeded", SHARED_AGENT) == (done["state"], done["agent"])
    assert [{"n": 0}, {"n": 1}, {"n": 2}] == api.records(job["id"])
    assert 1 == shared.agent.log_text().count("connected to wss://")
    agent_factory(shared.control, name="late-agent", cluster="late")
    wait_connected(api, ["late-agent"])
    late = api.wait_done(api.submit("echo", {"count": 1}, cluster="late")["id"], timeout=20)
    assert ("succeeded", "late-agent") == (late["state"], late["agent"])
    assert_serving(shared.control)


def test_no_bad_input_hits_an_unhandled_error(shared: Shared) -> None:
    """Bad input of every kind (and whatever else this module sent) left no unhandled error
    (a 500, a traceback) in the shared control plane's log."""
    _send_bad_input_of_every_kind(shared)
    log = shared.control.log_text()
    # The premise: the log is the one the control plane writes to, and it saw the bad input.
    assert "malformed_message" in log, log[-3000:]
    unhandled = re.compile(r"unhandled error|^\w+(Error|Exception): |^Traceback")
    assert [] == [line for line in log.splitlines() if unhandled.search(line)]
