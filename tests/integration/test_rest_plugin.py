"""The rest plugin against a real aiohttp.web server on loopback, driven through run_plugin."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from bridgehead_testing.harness import TIMEOUT_SCALE
from bridgehead_testing.pki import Pki, write_test_pki

from bridgehead.agent.plugin_loader import parse_params
from bridgehead.core.errors import InvalidParams, JobError, PolicyDenied, SourceError, SourceUnavailable
from bridgehead.plugins.rest import RestParams, RestPlugin
from bridgehead.sdk import Credential
from bridgehead.sdk.testing import run_plugin

# One knob for every wait in this file, so a slow machine can stretch them all at once.
SCALE = TIMEOUT_SCALE
TOKEN = "tok-3f9a7c1e-do-not-leak"  # noqa: S105 - a fake secret, looked for in messages
USER, PASSWORD = "svc", "pw-8d2b-do-not-leak"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Api:
    """A test API under /api, plus /secret outside it; remembers every request it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.peers: list[Any] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.slow_started = asyncio.Event()
        self.slow_cancelled = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/api/json", self.json)
        app.router.add_route("*", "/api/echo", self.echo)
        app.router.add_get("/api/items", self.items)
        app.router.add_get("/api/deep", self.deep)
        app.router.add_route("*", "/api/status/{code}", self.status)
        app.router.add_get("/api/big", self.big)
        app.router.add_get("/api/binary", self.binary)
        app.router.add_get("/api/text", self.text)
        app.router.add_get("/api/slow", self.slow)
        app.router.add_get("/api/auth", self.auth)
        app.router.add_get("/api/redirect", self.redirect)
        app.router.add_get("/api/cookie", self.cookie)
        app.router.add_get("/secret", self.json)
        self.app = app

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        # handler_cancellation: a client that hangs up cancels its handler, which is how the
        # cancellation test sees the connection close.
        self._runner = web.AppRunner(self.app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, ssl_context=ssl_context).start()
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.seen.append((request.method, request.raw_path))
        self.peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1

    async def json(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(float(request.query.get("sleep", "0")))
        return web.json_response({"hello": "world", "n": 1})

    async def echo(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "method": request.method,
                "path": request.raw_path,
                "query": [[k, v] for k, v in request.query.items()],
                "headers": dict(request.headers),
                "body": await request.text(),
            }
        )

    async def items(self, request: web.Request) -> web.StreamResponse:
        items = [{"i": i, "pad": "x" * 20} for i in range(int(request.query["n"]))]
        return web.json_response({"before": [1, 2], "data": {"items": items, "other": {"a": 1}}})

    async def deep(self, request: web.Request) -> web.StreamResponse:
        depth = int(request.query["depth"])
        body = b'{"items": [{"a": ' + b"[" * depth + b"]" * depth + b"}]}"
        return web.Response(body=body, content_type="application/json")

    async def status(self, request: web.Request) -> web.StreamResponse:
        code = int(request.match_info["code"])
        return web.Response(status=code, text=f"status {code} says why")

    async def big(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        if request.query.get("chunked") != "1":
            return web.Response(body=b"x" * size, content_type="application/octet-stream")
        # No Content-Length: the client can only find out by reading.
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, size, 100):
            await response.write(b"x" * min(100, size - start))
        await response.write_eof()
        return response

    async def binary(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=bytes(range(256)), content_type="application/octet-stream")

    async def text(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="héllo wörld", content_type="text/plain", charset="utf-8")

    async def slow(self, request: web.Request) -> web.StreamResponse:
        self.slow_started.set()
        try:
            await asyncio.sleep(60 * SCALE)
        except asyncio.CancelledError:
            self.slow_cancelled.set()
            raise
        return web.Response(text="too late")

    async def auth(self, request: web.Request) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if given == f"Bearer {TOKEN}":
            return web.json_response({"who": "bearer"})
        if given == BASIC:
            return web.json_response({"who": "basic"})
        # Echoes what it got, as careless servers do: the plugin must not pass it on.
        return web.Response(status=401, text=f"bad credentials: {given}")

    async def cookie(self, request: web.Request) -> web.StreamResponse:
        response = web.json_response({})
        response.set_cookie("session", "from-another-job")
        return response

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(self.url + "/secret")


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    server = Api()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def plugin() -> AsyncIterator[RestPlugin]:
    rest = RestPlugin()
    yield rest
    await rest.aclose()


async def run(
    plugin: RestPlugin,
    api: Api,
    params: dict[str, Any],
    *,
    credential: Credential | None = None,
    **profile: Any,
) -> list[dict[str, Any]]:
    return await run_plugin(
        plugin,
        {"connection": "local_api", **params},
        profile={"base_url": api.url + "/api", **profile},
        credential=credential,
        timeout_s=30 * SCALE,
    )


async def test_get_json_gives_one_record(plugin: RestPlugin, api: Api) -> None:
    """A GET of a JSON document gives one record with status, headers and the parsed body."""
    records = await run(plugin, api, {"path": "/json"})
    assert 1 == len(records)
    assert 200 == records[0]["status"]
    assert {"hello": "world", "n": 1} == records[0]["body"]
    assert records[0]["headers"]["content-type"].startswith("application/json")
    assert [("GET", "/api/json")] == api.seen


async def test_records_path_emits_every_element_in_order(plugin: RestPlugin, api: Api) -> None:
    """With records_path, each element of the array becomes one record, in order."""
    records = await run(plugin, api, {"path": "/items", "query": {"n": 10_000}, "records_path": "data.items"})
    assert [{"i": i, "pad": "x" * 20} for i in range(10_000)] == records


async def test_records_path_wraps_elements_that_are_not_objects(plugin: RestPlugin, api: Api) -> None:
    """Array elements that are not JSON objects are emitted as {"value": element}."""
    records = await run(plugin, api, {"path": "/items", "query": {"n": 0}, "records_path": "before"})
    assert [{"value": 1}, {"value": 2}] == records


@pytest.mark.parametrize("records_path", ["data.missing", "data.other", "data.items.deeper"])
async def test_records_path_not_an_array_is_bad_response(plugin: RestPlugin, api: Api, records_path: str) -> None:
    """A records_path that is missing or not an array fails the job with bad_response."""
    with pytest.raises(JobError) as caught:
        await run(plugin, api, {"path": "/items", "query": {"n": 3}, "records_path": records_path})
    assert "bad_response" == caught.value.code
    assert records_path in caught.value.message


async def test_records_path_on_a_body_that_is_not_json_is_bad_response(plugin: RestPlugin, api: Api) -> None:
    """A records_path over a body that is not JSON fails the job with bad_response."""
    with pytest.raises(JobError) as caught:
        await run(plugin, api, {"path": "/text", "records_path": "data"})
    assert "bad_response" == caught.value.code


@pytest.mark.parametrize("records_path", [None, "items"], ids=["whole-body", "records-path"])
async def test_json_nested_past_the_decoders_reach_is_bad_response(
    plugin: RestPlugin, api: Api, records_path: str | None
) -> None:
    """A JSON body nested 100,000 deep (past any decoder's recursion limit) fails the job with
    bad_response, as other undecodable JSON does, rather than crashing the plugin."""
    shallow = await run(plugin, api, {"path": "/deep", "query": {"depth": 3}, "records_path": "items"})
    assert [{"a": [[[]]]}] == shallow  # the premise: the route answers what the deep case nests
    params: dict[str, Any] = {"path": "/deep", "query": {"depth": 100_000}}
    if records_path is not None:
        params["records_path"] = records_path
    with pytest.raises(JobError) as caught:
        await run(plugin, api, params)
    assert "bad_response" == caught.value.code


async def test_text_and_binary_bodies(plugin: RestPlugin, api: Api) -> None:
    """A text body is recorded as text, a binary one as base64 with body_encoding."""
    [text] = await run(plugin, api, {"path": "/text"})
    [binary] = await run(plugin, api, {"path": "/binary"})
    assert "héllo wörld" == text["body"]
    assert "body_encoding" not in text
    assert "base64" == binary["body_encoding"]
    assert bytes(range(256)) == base64.b64decode(binary["body"])


async def test_head_has_an_empty_body(plugin: RestPlugin, api: Api) -> None:
    """A HEAD request is recorded with its status and an empty body."""
    [record] = await run(plugin, api, {"path": "/json", "method": "HEAD"})
    assert (200, "") == (record["status"], record["body"])


async def test_post_sends_the_json_body(plugin: RestPlugin, api: Api) -> None:
    """POST with json sends it encoded, with Content-Type application/json."""
    [record] = await run(plugin, api, {"method": "POST", "path": "/echo", "json": {"a": [1, 2], "b": None}})
    echoed = record["body"]
    assert "POST" == echoed["method"]
    assert "application/json" == echoed["headers"]["Content-Type"]
    assert {"a": [1, 2], "b": None} == json.loads(echoed["body"])


async def test_query_and_headers_are_sent(plugin: RestPlugin, api: Api) -> None:
    """Query values of every allowed type and headers of job and profile reach the server."""
    params = {
        "path": "/echo?fixed=1",
        "query": {"q": "a b/c&d", "n": 3, "x": 1.5, "flag": True, "tag": ["x", "y"]},
        "headers": {"X-Trace": "abc"},
    }
    [record] = await run(plugin, api, params, headers={"X-Profile": "p", "X-Trace": "overridden"})
    echoed = record["body"]
    expected = [
        ["fixed", "1"],
        ["q", "a b/c&d"],
        ["n", "3"],
        ["x", "1.5"],
        ["flag", "true"],
        ["tag", "x"],
        ["tag", "y"],
    ]
    assert expected == echoed["query"]
    assert echoed["path"].startswith("/api/echo?")
    assert ("abc", "p") == (echoed["headers"]["X-Trace"], echoed["headers"]["X-Profile"])


@pytest.mark.parametrize(
    ("credential", "who"),
    [(Credential(token=TOKEN), "bearer"), (Credential(username=USER, password=PASSWORD), "basic")],
)
async def test_credentials_are_sent(plugin: RestPlugin, api: Api, credential: Credential, who: str) -> None:
    """A token is sent as a bearer token, a user name and password as basic auth."""
    [record] = await run(plugin, api, {"path": "/auth"}, credential=credential)
    assert (200, {"who": who}) == (record["status"], record["body"])


async def test_credential_wins_over_a_job_authorization_header(plugin: RestPlugin, api: Api) -> None:
    """A job's own Authorization header does not replace the profile's credential."""
    params = {"path": "/auth", "headers": {"authorization": "Bearer forged"}}
    [record] = await run(plugin, api, params, credential=Credential(token=TOKEN))
    assert {"who": "bearer"} == record["body"]


async def test_redirects_are_recorded_not_followed(plugin: RestPlugin, api: Api) -> None:
    """A 302 is recorded as such; the plugin does not follow it off the base path."""
    [record] = await run(plugin, api, {"path": "/redirect"})
    assert 302 == record["status"]
    assert record["headers"]["location"].endswith("/secret")
    assert [("GET", "/api/redirect")] == api.seen


async def test_cookies_do_not_carry_over_between_jobs(plugin: RestPlugin, api: Api) -> None:
    """A cookie one job receives is not sent by the next job on the same pooled session."""
    # By name: aiohttp's default cookie jar would ignore cookies from an IP address.
    base_url = api.url.replace("127.0.0.1", "localhost") + "/api"
    [first] = await run(plugin, api, {"path": "/cookie"}, base_url=base_url)
    [second] = await run(plugin, api, {"path": "/echo"}, base_url=base_url)
    assert "session=from-another-job" in first["headers"]["set-cookie"]
    assert "Cookie" not in second["body"]["headers"]


@pytest.mark.parametrize("records_path", [None, "data.items"])
async def test_non_2xx_is_recorded_and_the_job_succeeds(plugin: RestPlugin, api: Api, records_path: str | None) -> None:
    """A 404 is one record with its status and body, even with a records_path."""
    params: dict[str, Any] = {"path": "/status/404"}
    if records_path:
        params["records_path"] = records_path
    assert [{"status": 404, "body": "status 404 says why"}] == [
        {"status": r["status"], "body": r["body"]} for r in await run(plugin, api, params)
    ]


@pytest.mark.parametrize(
    ("status", "method", "retryable"),
    [(404, "GET", False), (503, "GET", True), (503, "POST", False), (429, "POST", True)],
)
async def test_fail_on_status_fails_with_http_status(
    plugin: RestPlugin, api: Api, status: int, method: str, retryable: bool
) -> None:
    """With fail_on_status a non-2xx fails the job with http_status, naming the status."""
    with pytest.raises(SourceError) as caught:
        params = {"path": f"/status/{status}", "method": method, "fail_on_status": True}
        await run(plugin, api, params)
    assert "http_status" == caught.value.code
    assert str(status) in caught.value.message
    assert retryable is caught.value.retryable


@pytest.mark.parametrize("chunked", ["0", "1"])
async def test_body_over_max_response_bytes_fails(plugin: RestPlugin, api: Api, chunked: str) -> None:
    """A body one byte over max_response_bytes fails with response_too_large; at the limit it passes."""
    [record] = await run(
        plugin, api, {"path": "/big", "query": {"size": 1000, "chunked": chunked}}, max_response_bytes=1000
    )
    assert "x" * 1000 == record["body"]
    with pytest.raises(JobError) as caught:
        await run(
            plugin,
            api,
            {"path": "/big", "query": {"size": 1001, "chunked": chunked}},
            max_response_bytes=1000,
        )
    assert "response_too_large" == caught.value.code


async def test_connections_are_pooled_and_limited(plugin: RestPlugin, api: Api) -> None:
    """Jobs reuse one connection, and never open more than max_connections at once."""
    await run(plugin, api, {"path": "/json"}, max_connections=2)
    await run(plugin, api, {"path": "/json"}, max_connections=2)
    assert api.peers[0] == api.peers[1]
    jobs = [run(plugin, api, {"path": "/json", "query": {"sleep": 0.2 * SCALE}}, max_connections=2) for _ in range(6)]
    await asyncio.gather(*jobs)
    assert 2 == api.max_in_flight


EVIL_PATHS = [
    "http://other/x",
    "https://127.0.0.1/secret",
    "file:///etc/passwd",
    "//other/x",
    "\\\\other\\x",
    "../secret",
    "/../secret",
    "a/../../secret",
    "%2e%2e/secret",
    "%252e%252e/secret",
    "..%2fsecret",
    "..\\secret",
    "..;/secret",
]


@pytest.mark.parametrize("path", EVIL_PATHS)
async def test_paths_leaving_base_url_are_refused(plugin: RestPlugin, api: Api, path: str) -> None:
    """A path that names another host or climbs above the base path is refused, unsent."""
    with pytest.raises(PolicyDenied):
        await run(plugin, api, {"path": path})
    assert [] == api.seen


async def test_dot_segments_within_the_base_path_are_allowed(plugin: RestPlugin, api: Api) -> None:
    """A '..' that stays under the base path is not refused."""
    [record] = await run(plugin, api, {"path": "/items/./../json"})
    assert 200 == record["status"]
    assert [("GET", "/api/json")] == api.seen


async def test_allowed_methods_refuses_others_before_connecting(plugin: RestPlugin, api: Api) -> None:
    """A method outside the profile's allowed_methods is policy_denied and nothing is sent."""
    with pytest.raises(PolicyDenied) as caught:
        await run(plugin, api, {"path": "/echo", "method": "DELETE"}, allowed_methods=["GET", "HEAD"])
    assert "DELETE" in caught.value.message
    assert [] == api.seen
    [record] = await run(plugin, api, {"path": "/echo"}, allowed_methods=["GET", "HEAD"])
    assert 200 == record["status"]


@pytest.mark.parametrize(
    ("params", "profile"),
    [
        ({"path": "/json", "method": "TRACE"}, {}),
        ({"path": "/json", "headers": {"Host": "other"}}, {}),
        ({"path": "/json", "headers": {"X-A": "1\r\nX-B: 2"}}, {}),
        ({"path": "/json", "headers": {"Transfer-Encoding": "chunked"}}, {}),
        ({"path": "/json", "unknown": 1}, {}),
        ({"path": "/json#frag"}, {}),
        ({"path": "/json"}, {"base_url": "ftp://127.0.0.1/"}),
        ({"path": "/json"}, {"base_url": "http://user:pw@127.0.0.1/"}),
    ],
)
async def test_bad_params_and_profiles_are_invalid(
    plugin: RestPlugin, api: Api, params: dict[str, Any], profile: dict[str, Any]
) -> None:
    """Malformed params or profile keys fail with invalid_params before anything is sent."""
    with pytest.raises(InvalidParams):
        await run(plugin, api, params, **profile)
    assert [] == api.seen


@pytest.mark.parametrize(
    ("method", "safe"),
    [
        ("GET", True),
        ("HEAD", True),
        ("OPTIONS", True),
        ("PUT", True),
        ("DELETE", True),
        ("POST", False),
        ("PATCH", False),
    ],
)
def test_safe_to_repeat_follows_the_method(method: str, safe: bool) -> None:
    """Only POST and PATCH are unsafe to repeat after a lost attempt."""
    rest = RestPlugin()
    params = parse_params(rest, {"connection": "c", "path": "/", "method": method})
    assert isinstance(params, RestParams)
    assert safe is rest.is_safe_to_repeat(params)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused_is_source_unavailable(plugin: RestPlugin) -> None:
    """A refused connection fails with source_unavailable, marked retryable."""
    with pytest.raises(SourceUnavailable) as caught:
        await run_plugin(
            plugin,
            {"connection": "c", "path": "/x"},
            profile={"base_url": f"http://127.0.0.1:{closed_port()}"},
        )
    assert ("source_unavailable", True) == (caught.value.code, caught.value.retryable)


async def test_slow_answer_is_timeout(plugin: RestPlugin, api: Api) -> None:
    """A server slower than timeout_s fails the job with code timeout."""
    with pytest.raises(JobError) as caught:
        await run(plugin, api, {"path": "/slow", "timeout_s": 0.2 * SCALE})
    assert ("timeout", True) == (caught.value.code, caught.value.retryable)


async def test_timeout_is_capped_by_the_job_deadline(plugin: RestPlugin, api: Api) -> None:
    """With less job time left than timeout_s, the request times out first, with code timeout."""
    with pytest.raises(JobError) as caught:
        await run_plugin(
            plugin,
            {"connection": "c", "path": "/slow"},
            profile={"base_url": api.url + "/api"},
            timeout_s=0.5 * SCALE,
        )
    assert "timeout" == caught.value.code


async def test_cancel_closes_the_request(plugin: RestPlugin, api: Api) -> None:
    """Cancelling the job mid-request closes the connection: the server sees the hang-up."""
    job = asyncio.create_task(run(plugin, api, {"path": "/slow"}))
    await asyncio.wait_for(api.slow_started.wait(), 5 * SCALE)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await asyncio.wait_for(api.slow_cancelled.wait(), 5 * SCALE)


async def test_secrets_never_reach_error_messages_or_logs(
    plugin: RestPlugin, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Errors of a 401 that echoes the credential, a 500, a timeout or a refusal hide secrets."""
    caplog.set_level(logging.DEBUG)
    wrong_token, wrong_password = "wrong-" + TOKEN, "wrong-" + PASSWORD
    wrong_basic = base64.b64encode(f"{USER}:{wrong_password}".encode()).decode()
    bearer, basic = Credential(token=wrong_token), Credential(username=USER, password=wrong_password)
    refused = {"base_url": f"http://127.0.0.1:{closed_port()}"}
    attempts: list[Awaitable[object]] = [
        run(plugin, api, {"path": "/auth", "fail_on_status": True}, credential=bearer),
        run(plugin, api, {"path": "/auth", "fail_on_status": True}, credential=basic),
        run(plugin, api, {"path": "/status/500", "fail_on_status": True}, credential=basic),
        run(plugin, api, {"path": "/slow", "timeout_s": 0.1 * SCALE}, credential=bearer),
        run_plugin(plugin, {"connection": "c", "path": "/x"}, profile=refused, credential=basic),
    ]
    messages = []
    for attempt in attempts:
        with pytest.raises(JobError) as caught:
            await attempt
        messages.append(str(caught.value))
    assert "401" in messages[0] and "bad credentials: ***" in messages[0]
    assert "401" in messages[1] and "bad credentials: ***" in messages[1]
    for text in [*messages, caplog.text]:
        for secret in (wrong_token, wrong_password, wrong_basic):
            assert secret not in text


async def test_aiohttp_is_not_imported_until_first_use() -> None:
    """Importing the plugin does not import aiohttp, which would cost the idle agent ~10 MB."""
    code = "import sys, bridgehead.plugins.rest; sys.exit(any(m.split('.')[0] == 'aiohttp' for m in sys.modules))"
    assert 0 == subprocess.run([sys.executable, "-c", code], check=False).returncode


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return write_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def https_api(pki: Pki) -> AsyncIterator[Api]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    server = Api()
    await server.start(ssl_context=context)
    yield server
    await server.stop()


async def test_https_with_the_profile_ca_file(plugin: RestPlugin, https_api: Api, pki: Pki) -> None:
    """A server whose certificate the profile's ca_file signed is reached over HTTPS."""
    [record] = await run(plugin, https_api, {"path": "/json"}, ca_file=str(pki.ca_file))
    assert 200 == record["status"]


@pytest.mark.parametrize("trust", ["other_ca", "system"])
async def test_https_with_an_untrusted_certificate_is_tls_error(
    plugin: RestPlugin, https_api: Api, pki: Pki, trust: str
) -> None:
    """A certificate the profile does not trust fails with tls_error, and no request is sent."""
    profile: dict[str, Any] = {"ca_file": str(pki.other_ca_file)} if trust == "other_ca" else {}
    with pytest.raises(JobError) as caught:
        await run(plugin, https_api, {"path": "/json"}, **profile)
    assert "tls_error" == caught.value.code
    assert "certificate" in caught.value.message
    assert [] == https_api.seen


async def test_https_with_verify_false_works_and_warns_once(
    plugin: RestPlugin, https_api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """verify = false reaches an untrusted server, with one warning per profile."""
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        [record] = await run(plugin, https_api, {"path": "/json"}, verify=False)
        assert 200 == record["status"]
    assert 1 == sum("verify = false" in r.getMessage() for r in caplog.records)


async def test_tls_to_a_plain_http_server_is_tls_error(plugin: RestPlugin, api: Api) -> None:
    """An https base_url pointing at a plain HTTP server fails with tls_error."""
    with pytest.raises(JobError) as caught:
        await run_plugin(
            plugin,
            {"connection": "c", "path": "/json"},
            profile={"base_url": api.url.replace("http", "https")},
        )
    assert "tls_error" == caught.value.code
