"""schemathesis over the control plane's own OpenAPI document, against a real control plane
(HTTPS, its own CA) with an agent connected: every operation, with an admin token and with
none, valid and invalid requests, a bounded and seeded number of examples each. No answer may
be a 5xx, none may take longer than a request timeout, and every answer (status, media type,
body) must match the document. Path parameters are random, and also name a real job, a job whose delivery failed
and a real schedule, so the routes behind the 404 are fuzzed too."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import schemathesis
from bridgehead_testing.harness import Agent, ControlPlane, scaled, wait_connected, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from bridgehead.control.openapi import openapi_document

REQUEST_TIMEOUT_S = 10.0  # long polls are capped by max_wait_s = 1 below; anything slower is a hang
# Per operation (about 27), two requests an example: ~20 s on 2 cores. A longer hunt:
# BRIDGEHEAD_FUZZ_EXAMPLES=500 scripts/test tests/integration/test_api_fuzz.py
MAX_EXAMPLES = int(os.environ.get("BRIDGEHEAD_FUZZ_EXAMPLES", "40"))
# No 5xx; every status the document lists for the operation, with its media type and body schema.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Operations whose real path parameters would stop the run itself (the agent, the admin token).
NOT_SEEDED = ("/api/v1/agents/{name}", "/api/v1/tokens/{token_id}", "/api/v1/syncs/{name}")


@dataclass
class Fuzzed:
    control: ControlPlane
    ca_file: str
    # path parameter -> real values to try besides random ones
    known: dict[str, list[str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """A control plane (long polls capped at 1 s) with one agent, a finished job with records,
    a job whose delivery failed (its instance refuses connections), and a schedule."""
    workdir = tmp_path_factory.mktemp("fuzz")
    secret = workdir / "sn-password"
    secret.write_text("fuzz\n")
    instance = (
        '\n[servicenow.down]\nurl = "http://127.0.0.1:9"\ntables = ["u_fuzz_import"]\nauth = "basic"\n'
        f'username = "fuzz"\npassword_file = "{secret}"\nmax_retries = 0\ntimeout_s = 1\n'
    )
    control = ControlPlane(workdir, heartbeat_s=1.0, max_wait_s=1.0, extra_config=instance)
    agent: Agent | None = None
    try:
        control.start()
        agent = Agent(workdir / "agents", "fuzz-agent", [control.url])
        agent.enroll(control.enrollment_token())
        agent.start()
        api = control.api()
        wait_connected(api, [agent.name])
        done = api.submit("echo", {"records": [{"n": n, "text": "é\u0000\U0001f600"} for n in range(30)]})
        sink = {"servicenow": "down", "import_set": "u_fuzz_import"}
        failed = api.submit("echo", {"records": [{"n": 1}]}, sink=sink)
        for job in (done, failed):  # (Api.wait_done long-polls for longer than max_wait_s allows)
            wait_until(lambda j=job: api.job(j["id"])["state"] == "succeeded", 30, f"job {job['id']}")
        wait_until(lambda: api.job(failed["id"])["sync"]["state"] == "failed", 30, "the delivery to fail")
        schedule = {"name": "fuzz-nightly", "cron": "0 3 * * *", "job": {"plugin": "echo", "params": {}}}
        assert 201 == api.request("POST", "/api/v1/schedules", schedule)[0]
        known = {"job_id": [done["id"], failed["id"]], "name": ["fuzz-nightly"]}
        yield Fuzzed(control, str(control.data_dir / "tls" / "anchor.pem"), known)
    finally:
        if agent is not None:
            agent.stop(timeout=10)
        control.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed: Fuzzed) -> OpenApiSchema:
    """The document as the server serves it, aimed at that server."""
    url = fuzzed.control.url
    schema = schemathesis.openapi.from_url(url + "/api/v1/openapi.json", verify=fuzzed.ca_file, timeout=30)
    schema.config.update(base_url=url, tls_verify=fuzzed.ca_file, request_timeout=REQUEST_TIMEOUT_S)
    return schema


@pytest.fixture(scope="module")
def call(fuzzed: Fuzzed) -> Callable[[Case, bool], int]:
    """Send a case with the admin token or none, run the checks, give the status."""
    admin = {"Authorization": f"Bearer {fuzzed.control.admin_token}"}

    def call_and_check(case: Case, authenticated: bool) -> int:
        response = case.call_and_validate(
            headers=admin if authenticated else {},
            checks=CHECKS,
            verify=fuzzed.ca_file,
            timeout=scaled(REQUEST_TIMEOUT_S),
        )
        return int(response.status_code)

    return call_and_check


def operations() -> list[tuple[str, str]]:
    """``(METHOD, path)`` of every operation in the document (the server serves this same one)."""
    return [
        (method.upper(), path)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method in ("get", "put", "post", "patch", "delete")
    ]


def is_public(method: str, path: str) -> bool:
    return openapi_document()["paths"][path][method.lower()].get("security") == []


def test_the_served_document_is_the_one_fuzzed(api_schema: OpenApiSchema) -> None:
    """The server's /api/v1/openapi.json names exactly the operations these tests cover."""
    served = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert set(operations()) == served


@pytest.mark.parametrize(("method", "path"), operations(), ids=[f"{m} {p}" for m, p in operations()])
def test_every_operation_answers_within_its_contract(
    api_schema: OpenApiSchema, fuzzed: Fuzzed, call: Callable[[Case, bool], int], method: str, path: str
) -> None:
    """Requests valid or not, with an admin token and without, get documented non-5xx answers in time."""
    operation = api_schema[path][method]
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    strategies = [operation.as_strategy(mode) for mode in modes]
    params = [name for name in fuzzed.known if "{" + name + "}" in path]
    if params and path not in NOT_SEEDED:
        for value in fuzzed.known[params[0]]:
            strategies += [operation.as_strategy(mode, path_parameters={params[0]: value}) for mode in modes]

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(strategies))
    def run(case: Case) -> None:
        seen.append((call(case, True), call(case, False)))

    seen: list[tuple[int, int]] = []
    run()
    assert seen
    if not is_public(method, path):
        # The premise: the token got past authentication, and no request did without one.
        assert any(status != 401 for status, _ in seen), seen
        assert {401} == {status for _, status in seen}


def test_the_fuzzed_control_plane_logged_no_internal_error(fuzzed: Fuzzed, api_schema: OpenApiSchema) -> None:
    """No request made the control plane log an unhandled exception."""
    log = Path(fuzzed.control.log).read_text(errors="replace")
    assert [] == [line for line in log.splitlines() if "Traceback" in line or "Exception in ASGI" in line]
