"""Sessions in the sandbox, as on an instance: every answer sets session cookies, requests that
send the session cookie back run one at a time, and beyond the session's queue limit a request
is answered 202 and never processed (ServiceNow KB0755706 and the "HTTP 202 from an inbound
web service call" article). Requests without the cookie are independent and run in parallel.

The sandbox runs as a real process; requests go through aiohttp with no cookie jar, so the
test decides exactly which cookies each request carries.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bridgehead_testing.harness import scaled
from bridgehead_testing.sandbox_server import SandboxServer

AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:admin").decode(), "Accept": "application/json"}
LATENCY_MS = 600
CONFIG = """
[sessions]
max_waiters = 2
"""


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "sandbox", CONFIG) as server:
        yield server


async def request(
    client: aiohttp.ClientSession, sandbox: SandboxServer, method: str, path: str, cookie: str = "", body: Any = None
) -> tuple[int, dict[str, str], str]:
    """(status, the cookies the answer set, the body)."""
    headers = dict(AUTH)
    if cookie:
        headers["Cookie"] = f"JSESSIONID={cookie}"
    async with client.request(method, sandbox.url + path, headers=headers, json=body) as response:
        text = await response.text()
        set_cookies = {}
        for header in response.headers.getall("Set-Cookie", []):
            name, _, rest = header.partition("=")
            set_cookies[name] = rest.partition(";")[0]
        return response.status, set_cookies, text


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())


def test_every_answer_sets_the_session_cookies(sandbox: SandboxServer) -> None:
    async def go() -> None:
        async with await _client() as client:
            status, cookies, _ = await request(client, sandbox, "GET", "/api/now/table/sys_user?sysparm_limit=1")
            assert status == 200
            assert re.fullmatch(r"[0-9A-F]{32}", cookies["JSESSIONID"])
            assert cookies["glide_user_route"].startswith("glide.")
            assert any(name.startswith("BIGipServerpool") for name in cookies)
            # Sending it back joins the session: the same id comes back.
            _, again, _ = await request(
                client, sandbox, "GET", "/api/now/table/sys_user?sysparm_limit=1", cookies["JSESSIONID"]
            )
            assert again["JSESSIONID"] == cookies["JSESSIONID"]
            # Without it, a request gets a session of its own; an unknown one is replaced.
            _, other, _ = await request(client, sandbox, "GET", "/api/now/table/sys_user?sysparm_limit=1")
            _, unknown, _ = await request(client, sandbox, "GET", "/api/now/table/sys_user?sysparm_limit=1", "0" * 32)
            assert len({cookies["JSESSIONID"], other["JSESSIONID"], unknown["JSESSIONID"], "0" * 32}) == 4
            # A 401 sets them too, as every API answer does.
            async with client.get(sandbox.url + "/api/now/table/sys_user") as response:
                assert response.status == 401
                assert "JSESSIONID" in response.headers.get("Set-Cookie", "")

    run(go())


def test_one_transaction_at_a_time_per_session(sandbox: SandboxServer) -> None:
    """With injected latency, three requests on one session take three times as long as
    three cookieless ones, which run side by side."""
    sandbox.faults(latency_ms=LATENCY_MS)

    async def go() -> tuple[float, float]:
        async with await _client() as client:
            _, cookies, _ = await request(client, sandbox, "GET", "/api/now/table/sys_user?sysparm_limit=1")
            path = "/api/now/table/sys_user?sysparm_limit=1"
            started = time.monotonic()
            answers = await asyncio.gather(
                *[request(client, sandbox, "GET", path, cookies["JSESSIONID"]) for _ in range(3)]
            )
            shared = time.monotonic() - started
            assert [a[0] for a in answers] == [200, 200, 200]
            started = time.monotonic()
            answers = await asyncio.gather(*[request(client, sandbox, "GET", path) for _ in range(3)])
            apart = time.monotonic() - started
            assert [a[0] for a in answers] == [200, 200, 200]
            return shared, apart

    shared, apart = run(go())
    assert shared >= 3 * LATENCY_MS / 1000 * 0.95
    assert apart < scaled(2 * LATENCY_MS / 1000)


def test_beyond_the_queue_limit_a_request_is_answered_202_and_not_processed(sandbox: SandboxServer) -> None:
    """max_waiters = 2: of seven inserts sent at once on one session, one runs, two wait, and
    four are answered 202 with no body; exactly three records exist afterwards."""
    sandbox.faults(latency_ms=LATENCY_MS)

    async def go() -> list[tuple[int, dict[str, str], str]]:
        async with await _client() as client:
            _, cookies, _ = await request(client, sandbox, "GET", "/api/now/table/sys_user?sysparm_limit=1")
            session = cookies["JSESSIONID"]
            sends = [
                request(client, sandbox, "POST", "/api/now/table/sys_user", session, {"user_name": f"queued{i}"})
                for i in range(7)
            ]
            return list(await asyncio.gather(*sends))

    answers = run(go())
    sandbox.call("DELETE", "/sandbox/faults")
    statuses = sorted(a[0] for a in answers)
    assert statuses == [201, 201, 201, 202, 202, 202, 202], statuses
    assert all(a[2] == "" for a in answers if a[0] == 202)
    landed = sandbox.rows("sys_user", "user_nameSTARTSWITHqueued")
    assert len(landed) == 3
    assert sandbox.stats()["by_status"]["202"] == 4


def test_sessions_can_be_switched_off(tmp_path: Path) -> None:
    """sessions.enabled = false (lenient): no cookies, and a shared cookie does not serialise."""
    with SandboxServer(tmp_path / "off", "[sessions]\nenabled = false\n") as sandbox:
        sandbox.faults(latency_ms=LATENCY_MS)

        async def go() -> float:
            async with await _client() as client:
                status, cookies, _ = await request(client, sandbox, "GET", "/api/now/table/sys_user?sysparm_limit=1")
                assert (status, cookies) == (200, {})
                started = time.monotonic()
                path = "/api/now/table/sys_user?sysparm_limit=1"
                await asyncio.gather(*[request(client, sandbox, "GET", path, "A" * 32) for _ in range(3)])
                return time.monotonic() - started

        assert run(go()) < scaled(2 * LATENCY_MS / 1000)


def test_sessions_are_bounded_and_expire(tmp_path: Path) -> None:
    """At most max_sessions are kept (the least recently used idle one goes), and an idle one
    expires after idle_timeout_s: its cookie then gets a new session."""
    config = "[sessions]\nmax_sessions = 3\nidle_timeout_s = 1\n"
    with SandboxServer(tmp_path / "bounded", config) as sandbox:

        async def go() -> None:
            path = "/api/now/table/sys_user?sysparm_limit=1"
            async with await _client() as client:
                ids = [(await request(client, sandbox, "GET", path))[1]["JSESSIONID"] for _ in range(4)]
                # Four sessions made, three kept: the first one is gone, the last is still there.
                assert (await request(client, sandbox, "GET", path, ids[3]))[1]["JSESSIONID"] == ids[3]
                assert (await request(client, sandbox, "GET", path, ids[0]))[1]["JSESSIONID"] != ids[0]
                await asyncio.sleep(1.5)
                assert (await request(client, sandbox, "GET", path, ids[3]))[1]["JSESSIONID"] != ids[3]

        run(go())
