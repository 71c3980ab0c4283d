"""ServiceNow's own Python client, PySNC (PyPI ``pysnc``), against the sandbox as against an
instance: an encoded query, paging, insert, update, delete, and PySNC's Batch API paths
(``update_multiple``, ``delete_multiple``, a query too long for a URL).

PySNC accepts only ``https://`` instance URLs and the sandbox serves plain HTTP on loopback,
so the client's requests session carries one transport adapter that sends its
``https://127.0.0.1:<port>`` requests as ``http://``; nothing else of PySNC is changed, and
every request it makes reaches the real sandbox process. Results are checked by reading the
sandbox's table back with our own client."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from bridgehead_testing.sandbox_server import SandboxServer
from requests.adapters import HTTPAdapter

pysnc = pytest.importorskip("pysnc")


class PlainHttp(HTTPAdapter):
    """Sends the https:// requests PySNC insists on as http:// to the loopback sandbox."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        assert request.url is not None
        request.url = "http://" + request.url.removeprefix("https://")
        return super().send(request, *args, **kwargs)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("pysnc")) as server:
        yield server


def client_for(sandbox: SandboxServer) -> Any:
    instance = f"https://{sandbox.host}:{sandbox.port}"
    session = requests.Session()
    session.auth = ("admin", "admin")
    session.mount(instance, PlainHttp())
    # auto_retry=False: PySNC would mount its own retrying adapter on the same prefix.
    return pysnc.ServiceNowClient(instance, session, auto_retry=False)


def by_name(sandbox: SandboxServer, query: str) -> Mapping[str, dict[str, Any]]:
    return {r["name"]: r for r in sandbox.rows("sys_user_group", query)}


def test_insert_query_page_update_delete(sandbox: SandboxServer) -> None:
    """GlideRecord insert, an encoded query paged 3 at a time, update and delete one by one."""
    client = client_for(sandbox)
    for i in range(8):
        gr = client.GlideRecord("sys_user_group")
        gr.initialize()
        gr.name = f"pysnc-{i}"
        gr.description = "even" if i % 2 == 0 else "odd"
        gr.active = True
        assert gr.insert() is not None
    stored = by_name(sandbox, "nameSTARTSWITHpysnc-")
    assert 8 == len(stored)
    assert {"true"} == {r["active"] for r in stored.values()}

    gr = client.GlideRecord("sys_user_group", batch_size=3)
    gr.add_encoded_query("nameSTARTSWITHPYSNC-^description=EVEN^ORDERBYname")  # the instance ignores case
    gr.query()
    assert 4 == len(gr)
    seen = [record.name.get_value() for record in gr]  # 4 rows over pages of 3: two GETs
    assert ["pysnc-0", "pysnc-2", "pysnc-4", "pysnc-6"] == seen

    gr = client.GlideRecord("sys_user_group")
    assert gr.get("name", "pysnc-1")
    gr.description = "changed"
    assert gr.update() is not None
    gr = client.GlideRecord("sys_user_group")
    assert gr.get("name", "pysnc-3")
    assert gr.delete()
    stored = by_name(sandbox, "nameSTARTSWITHpysnc-")
    assert "changed" == stored["pysnc-1"]["description"]
    assert "1" == stored["pysnc-1"]["sys_mod_count"]
    assert "pysnc-3" not in stored


def test_update_multiple_and_delete_multiple_use_the_batch_api(sandbox: SandboxServer) -> None:
    """update_multiple and delete_multiple send their PATCHes and DELETEs in Batch API calls."""
    client = client_for(sandbox)
    for i in range(5):
        gr = client.GlideRecord("sys_user_group")
        gr.initialize()
        gr.name = f"bulk-{i}"
        gr.insert()
    before = sandbox.stats()["by_endpoint"]
    gr = client.GlideRecord("sys_user_group")
    gr.add_query("name", "STARTSWITH", "bulk-")
    gr.query()
    for record in gr:
        record.description = "bulk-updated"
    assert gr.update_multiple()
    assert {"bulk-updated"} == {r["description"] for r in by_name(sandbox, "nameSTARTSWITHbulk-").values()}

    gr = client.GlideRecord("sys_user_group")
    gr.add_query("name", "IN", "bulk-0,BULK-1,bulk-2")
    gr.query()
    assert gr.delete_multiple()
    assert ["bulk-3", "bulk-4"] == sorted(by_name(sandbox, "nameSTARTSWITHbulk-"))
    after = sandbox.stats()["by_endpoint"]
    assert after.get("POST batch", 0) - before.get("POST batch", 0) == 2  # one batch each
    assert after.get("PATCH table.record", 0) == before.get("PATCH table.record", 0)  # no direct PATCH


def test_a_query_too_long_for_a_url_goes_through_the_batch_api(tmp_path: Path, sandbox: SandboxServer) -> None:
    """Past about 10,000 characters of parameters PySNC sends the GET inside a batch; the
    sandbox's URL limit would refuse it as a plain GET."""
    client = client_for(sandbox)
    gr = client.GlideRecord("sys_user_group")
    gr.initialize()
    gr.name = "needle"
    gr.insert()
    hay = ",".join(f"nothing-{i:04d}-{'y' * 40}" for i in range(250))
    gr = client.GlideRecord("sys_user_group")
    gr.add_encoded_query(f"nameIN{hay},NEEDLE")
    gr.query()
    assert ["needle"] == [record.name.get_value() for record in gr]
