"""The sandbox's Batch API (POST /api/now/v1/batch), run as a real process over HTTP: each item
runs as its own Table API request, answers carry base64 bodies, and the tables read back
afterwards hold exactly what the items did."""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridgehead_testing.sandbox_server import SandboxServer


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("batch"), "[limits]\nmax_batch_requests = 20\n") as server:
        yield server


def item(id_: str, method: str, url: str, body: Any = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": id_,
        "method": method,
        "url": url,
        "headers": [
            {"name": "Content-Type", "value": "application/json"},
            {"name": "Accept", "value": "application/json"},
        ],
        **extra,
    }
    if body is not None:
        out["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    return out


def batch(sandbox: SandboxServer, items: list[dict[str, Any]], path: str = "/api/now/v1/batch") -> dict[str, Any]:
    status, answer = sandbox.call("POST", path, {"batch_request_id": 7, "rest_requests": items})
    assert 200 == status, answer
    assert "7" == answer["batch_request_id"]  # echoed as a string (PySNC compares str(id))
    result: dict[str, Any] = answer
    return result


def decoded(serviced: dict[str, Any]) -> Any:
    raw = base64.b64decode(serviced["body"])
    return json.loads(raw) if raw else None


def test_items_run_in_order_as_table_api_requests(sandbox: SandboxServer) -> None:
    """POST, PATCH, GET and DELETE items each get their Table API answer; the table then holds
    what they did, and an item for an unknown table fails alone."""
    made = sandbox.call("POST", "/api/now/table/sys_user_group", {"name": "batch-old"})[1]["result"]
    answer = batch(
        sandbox,
        [
            item("a", "POST", "/api/now/table/sys_user_group", {"name": "batch-new", "description": "made in a batch"}),
            item("b", "PATCH", f"/api/now/table/sys_user_group/{made['sys_id']}", {"description": "patched"}),
            item("c", "GET", "/api/now/table/sys_user_group?sysparm_query=nameSTARTSWITHbatch-&sysparm_fields=name"),
            item("d", "DELETE", f"/api/now/table/sys_user_group/{made['sys_id']}", exclude_response_headers=True),
            item("e", "GET", "/api/now/table/u_nowhere"),
        ],
    )
    by_id = {s["id"]: s for s in answer["serviced_requests"]}
    assert ["a", "b", "c", "d", "e"] == [s["id"] for s in answer["serviced_requests"]]
    assert [] == answer["unserviced_requests"]
    assert (201, "Created") == (by_id["a"]["status_code"], by_id["a"]["status_text"])
    assert "patched" == decoded(by_id["b"])["result"]["description"]
    assert ["batch-new", "batch-old"] == sorted(r["name"] for r in decoded(by_id["c"])["result"])
    assert (204, []) == (by_id["d"]["status_code"], by_id["d"]["headers"])
    assert 400 == by_id["e"]["status_code"]
    assert "Invalid table u_nowhere" == decoded(by_id["e"])["error"]["message"]
    assert any(h["name"].lower() == "content-type" for h in by_id["a"]["headers"])
    assert all(isinstance(s["execution_time"], int) for s in answer["serviced_requests"])
    assert ["made in a batch"] == [r["description"] for r in sandbox.rows("sys_user_group", "nameSTARTSWITHbatch-")]


def test_a_query_too_long_for_a_url_goes_through_a_batch(sandbox: SandboxServer) -> None:
    """The URL limit applies to the HTTP request, not to an item's url, as PySNC relies on."""
    sandbox.call("POST", "/api/now/table/sys_user", {"user_name": "long.query"})
    names = ",".join(["LONG.QUERY"] + [f"nobody-{i:05d}-{'x' * 60}" for i in range(200)])
    url = "/api/now/table/sys_user?" + urllib.parse.urlencode({"sysparm_query": f"user_nameIN{names}"})
    assert len(url) > 8192
    assert 400 == sandbox.call("GET", url)[0]
    [served] = batch(sandbox, [item("q", "GET", url)])["serviced_requests"]
    assert ["long.query"] == [r["user_name"] for r in decoded(served)["result"]]


def test_bad_batches_and_items(sandbox: SandboxServer) -> None:
    """A batch without rest_requests, with an item lacking an id or with bad base64, or over
    max_batch_requests is refused whole (nothing runs); items outside /api/ or nesting a batch fail alone."""
    before = len(sandbox.rows("sys_user_group"))
    for body in (
        {"batch_request_id": "1"},
        {"rest_requests": [{"method": "GET", "url": "/api/now/table/sys_user"}]},
        {"rest_requests": [item("x", "POST", "/api/now/table/sys_user_group") | {"body": "***"}]},
        {"rest_requests": [item(str(i), "POST", "/api/now/table/sys_user_group", {"name": "n"}) for i in range(21)]},
    ):
        status, answer = sandbox.call("POST", "/api/now/v1/batch", body)
        assert 400 == status, (body, answer)
    assert before == len(sandbox.rows("sys_user_group"))
    answer = batch(
        sandbox, [item("s", "GET", "/sandbox/stats"), item("n", "POST", "/api/now/v1/batch", {"rest_requests": []})]
    )
    assert [400, 400] == [s["status_code"] for s in answer["serviced_requests"]]


def test_items_past_the_batch_timeout_are_unserviced(tmp_path: Path) -> None:
    """Past limits.batch_timeout_s the rest of the items are returned unserviced and not run."""
    with SandboxServer(tmp_path / "timeout", "[limits]\nbatch_timeout_s = 0.000001\n") as sandbox:
        items = [item(str(i), "POST", "/api/now/table/sys_user_group", {"name": f"t{i}"}) for i in range(5)]
        answer = batch(sandbox, items, path="/api/now/batch")
        served = [s["id"] for s in answer["serviced_requests"]]
        assert served and served == ["0"]  # one item always runs, so a client that resends progresses
        assert ["1", "2", "3", "4"] == answer["unserviced_requests"]
        assert ["t0"] == [r["name"] for r in sandbox.rows("sys_user_group")]
