"""``InstanceClient`` against a real HTTP server that answers as an instance's session layer
does: session cookies on every answer, 202 (nothing done) when too many transactions wait on
one session, and a 200 "Transaction cancelled" from the transaction quota."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from bridgehead.control.sinks.client import InstanceClient
from bridgehead.control.sinks.config import ServiceNowInstance

QUEUED = {"error": {"message": "Too many transactions queued on the session", "detail": None}, "status": "failure"}
CANCELLED = {
    "error": {"message": "Transaction cancelled: maximum execution time exceeded", "detail": "..."},
    "status": "failure",
}


class NoTokens:
    async def refresh_token(self, instance: str) -> tuple[str, str] | None:
        return None

    def keep_refresh_token(self, instance: str, token: str, origin: str, now: float) -> Any:
        return None


class Instance:
    """Answers ``script`` in turn (then 200), each with session cookies; records what came."""

    def __init__(self, script: list[tuple[int, dict[str, Any]]]) -> None:
        self.script = list(script)
        self.cookies_seen: list[str] = []
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.cookies_seen.append(request.headers.get("Cookie", ""))
        status, body = self.script.pop(0) if self.script else (200, {"result": [{"sys_id": "a" * 32}]})
        response = web.json_response(body, status=status)
        response.set_cookie("JSESSIONID", f"session-{self.requests}")
        response.set_cookie("BIGipServerpool_corp", "node-1")
        return response


async def client_for(instance: Instance, monkeypatch: pytest.MonkeyPatch) -> tuple[InstanceClient, web.AppRunner]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", instance.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setenv("BH_TEST_SN_PASSWORD", "admin")
    config = ServiceNowInstance(
        # A host name, not an IP: aiohttp's default jar would keep no cookie for an IP address.
        url=f"http://localhost:{port}",
        tables=["u_rows"],
        auth="basic",
        username="admin",
        password_env="BH_TEST_SN_PASSWORD",  # noqa: S106 - the name of a variable
        backoff_max_s=0.1,
        max_retries=5,
    )
    return InstanceClient("corp", config, NoTokens()), runner


async def test_no_cookie_is_sent_back_and_a_202_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    instance = Instance([(202, QUEUED), (202, QUEUED)])
    client, runner = await client_for(instance, monkeypatch)
    try:
        answer = await client.request("GET", "/api/now/table/u_rows", params={"sysparm_limit": "1"})
        assert 200 == answer.status
        assert 3 == instance.requests  # two 202s (nothing done), then the answer
        second = await client.request("POST", "/api/now/table/u_rows", json={"u_id": "1"})
        assert 200 == second.status
        assert [""] * 4 == instance.cookies_seen  # every request stood alone
    finally:
        await client.close()
        await runner.cleanup()


async def test_a_cancelled_transaction_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    instance = Instance([(200, CANCELLED)])
    client, runner = await client_for(instance, monkeypatch)
    try:
        answer = await client.request("POST", "/api/now/import/u_rows_import/insertMultiple", json={"records": []})
        assert 200 == answer.status and "result" in answer.body
        assert 2 == instance.requests
    finally:
        await client.close()
        await runner.cleanup()


async def test_an_accepted_post_with_a_body_is_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 202 carrying a result (an accepted write, not a queued session) is not sent again."""
    instance = Instance([(202, {"import_set_id": "x" * 32, "multi_import_set_id": "y" * 32})])
    client, runner = await client_for(instance, monkeypatch)
    try:
        answer = await client.request("POST", "/api/now/import/u_rows_import/insertMultiple", json={"records": []})
        assert (202, 1) == (answer.status, instance.requests)
    finally:
        await client.close()
        await runner.cleanup()
