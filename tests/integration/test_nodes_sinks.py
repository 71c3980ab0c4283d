"""Sink deliveries with two control-plane nodes on one PostgreSQL database (issue 19): one node
at a time drives a delivery, and when that node is killed (-9) in the middle, the other takes
the delivery over once its lease lapses and finishes it from the durable cursor, every record
in the ServiceNow sandbox exactly once.

What is checked is what the servers hold: the sandbox's table read through its own API, the
sandbox's count of requests, and the delivery's row in the database (which node holds it)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from bridgehead_testing.harness import Agent, Api, scaled, wait_connected, wait_until
from bridgehead_testing.node_group import NodeGroup
from bridgehead_testing.nodes import IDENTITY_SECRET_ENV, fresh_database, node_store
from bridgehead_testing.outages import stopped
from bridgehead_testing.sandbox_server import SandboxServer, with_setup

from bridgehead.control.nodes.node_id import node_id
from bridgehead.control.sinks.runner import LEASE_S

AgentFactory = Callable[..., Agent]

PG = "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=test"
AGENT_PROFILES = f"""
[connections.pg]
plugin = "sql"
connection_string = "{PG}"
credential = "pg"

[credentials.pg]
username = "root"
"""
# An import set coalescing on u_id: a batch sent twice (in flight when its node died) updates
# or is ignored the second time, never inserts a row again.
SANDBOX_CONFIG = """
[transforms.u_rows_import]
target = "u_rows"
coalesce = ["u_id"]
display_field = "u_name"
[transforms.u_rows_import.fields]
u_id = "u_id"
u_name = "u_name"
"""
SECRET_ENV = "BH_TEST_SN_SECRET"  # noqa: S105 - the name of a variable, not a secret
SINK = {"servicenow": "sandbox", "import_set": "u_rows_import", "map": {"u_id": "id", "u_name": "name"}}
COUNT = 6000
BATCH = 50


def instance_config(sandbox: SandboxServer) -> str:
    table: dict[str, Any] = {
        "url": sandbox.url,
        "tables": ["u_rows_import"],
        "auth": "oauth_client_credentials",
        "client_id": "bridgehead",
        "client_secret_env": SECRET_ENV,
        "batch_size": BATCH,
        "max_requests_per_s": 1000,
    }
    return "\n[servicenow.sandbox]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + "\n"


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(IDENTITY_SECRET_ENV, secrets.token_urlsafe(32))
    monkeypatch.setenv(SECRET_ENV, "bridgehead")
    with fresh_database() as url:
        yield url


@pytest.fixture
def group(tmp_path: Path) -> Iterator[NodeGroup]:
    nodes = NodeGroup(tmp_path / "nodes")
    yield nodes
    nodes.stop()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    # Each request 40 ms slower: the delivery lasts long enough to be cut in the middle.
    server = SandboxServer(tmp_path / "sandbox", with_setup(SANDBOX_CONFIG, "[faults]\nlatency_ms = 40\n")).start()
    yield server
    server.stop()


def delivery_row(database: str, job_id: str) -> asyncpg.Record | None:
    async def read() -> asyncpg.Record | None:
        conn = await asyncpg.connect(database)
        try:
            row: asyncpg.Record | None = await conn.fetchrow(
                "SELECT state, node, lease_until FROM sink_deliveries WHERE job_id=$1", job_id
            )
            return row
        finally:
            await conn.close()

    return asyncio.run(read())


def rows_query(count: int) -> str:
    return f"SELECT g AS id, 'name-' || g AS name FROM generate_series(1, {count}) g ORDER BY g"  # noqa: S608


def wait_synced(api: Api, job_id: str, timeout: float) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        sync: dict[str, Any] = api.job(job_id)["sync"]
        return sync if sync["state"] in ("done", "failed") else None

    result: dict[str, Any] = wait_until(ended, scaled(timeout), f"delivery of job {job_id}")
    return result


def test_a_delivery_cut_by_its_nodes_death_finishes_on_the_other_node_exactly_once(
    database: str,
    sandbox: SandboxServer,
    group: NodeGroup,
    agent_factory: AgentFactory,
) -> None:
    config = node_store(database) + instance_config(sandbox)
    a = group.start(heartbeat_s=1.0, extra_config=config)
    b = group.start(heartbeat_s=1.0, extra_config=config)
    nodes = {node_id(a.data_dir): a, node_id(b.data_dir): b}
    agent_factory(a, "agent-a", urls=[a.url], extra=AGENT_PROFILES)
    wait_connected(a.api(), ["agent-a"])

    job = a.api().submit("sql", {"connection": "pg", "query": rows_query(COUNT)}, sink=SINK)
    assert "succeeded" == a.api().wait_done(job["id"], timeout=scaled(60))["state"]

    def far_enough() -> asyncpg.Record | None:
        sync = a.api().job(job["id"])["sync"]
        row = delivery_row(database, job["id"])
        return row if sync["state"] == "delivering" and sync["delivered"] >= 1000 and row is not None else None

    row = wait_until(far_enough, scaled(60), "the delivery a third of the way through", interval=0.1)
    assert ("delivering", True) == (row["state"], row["node"] in nodes), dict(row)
    driver = nodes[row["node"]]
    survivor = b if driver is a else a
    driver.kill9()
    posted_before = sandbox.stats()["by_endpoint"].get("POST import.insertMultiple", 0)

    # The survivor resumes once the dead node's lease lapses (at most LEASE_S after its last
    # renewal), and finishes from the cursor.
    sync = wait_synced(survivor.api(), job["id"], timeout=LEASE_S + 120)
    assert ("done", 0) == (sync["state"], sync["errors"]), sync
    # Each batch counted once: the batches in flight at the kill come back ignored or updated.
    assert COUNT == sync["inserted"] + sync["ignored"] + sync["updated"], sync
    rows = sandbox.rows("u_rows", fields="u_id")
    ids = [r["u_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a record landed twice"
    assert {str(i) for i in range(1, COUNT + 1)} == set(ids)
    # Resumed, not restarted: far fewer than all 120 batches were posted after the kill.
    posted_after = sandbox.stats()["by_endpoint"]["POST import.insertMultiple"]
    assert posted_after - posted_before < COUNT // BATCH - 10, (posted_before, posted_after)
    # Finished by the survivor, released (no node holds a done delivery).
    done = delivery_row(database, job["id"])
    assert done is not None and ("done", None) == (done["state"], done["node"]), dict(done or {})
    metrics = survivor.metrics()
    assert 'bridgehead_sink_deliveries_total{instance="sandbox",state="done"} 1.0' in metrics


def test_a_node_frozen_past_its_lease_is_fenced_off_and_stops(
    database: str,
    sandbox: SandboxServer,
    group: NodeGroup,
    agent_factory: AgentFactory,
) -> None:
    """A node frozen (SIGSTOP) past its lease loses the delivery to the other node; thawed, it
    commits nothing more and stops driving it, and the records land once."""
    config = node_store(database) + instance_config(sandbox)
    a = group.start(heartbeat_s=1.0, extra_config=config)
    b = group.start(heartbeat_s=1.0, extra_config=config)
    nodes = {node_id(a.data_dir): a, node_id(b.data_dir): b}
    agent_factory(a, "agent-a", urls=[a.url], extra=AGENT_PROFILES)
    wait_connected(a.api(), ["agent-a"])
    job = b.api().submit("sql", {"connection": "pg", "query": rows_query(COUNT)}, sink=SINK)
    assert "succeeded" == b.api().wait_done(job["id"], timeout=scaled(60))["state"]

    def far_enough() -> asyncpg.Record | None:
        row = delivery_row(database, job["id"])
        sync = b.api().job(job["id"])["sync"]
        return row if row is not None and row["state"] == "delivering" and sync["delivered"] >= 1000 else None

    first = wait_until(far_enough, scaled(60), "the delivery a third of the way through", interval=0.1)["node"]
    driver = nodes[first]
    other = b if driver is a else a
    assert driver.proc is not None
    with stopped(driver.proc):

        def taken_over() -> bool:
            row = delivery_row(database, job["id"])
            return row is not None and row["node"] not in (None, first)

        wait_until(taken_over, scaled(LEASE_S + 30), "the other node taking the delivery over")
    sync = wait_synced(other.api(), job["id"], timeout=120)
    assert ("done", 0) == (sync["state"], sync["errors"]), sync
    assert COUNT == sync["inserted"] + sync["ignored"] + sync["updated"], sync
    ids = [r["u_id"] for r in sandbox.rows("u_rows", fields="u_id")]
    assert len(ids) == len(set(ids)) == COUNT, "a record landed twice, or one is missing"
    # The thawed node learnt it lost the delivery (at its next renewal or batch commit).
    wait_until(
        lambda: "no longer holds its delivery" in driver.log_text() or "took its delivery over" in driver.log_text(),
        scaled(20),
        "the thawed node to stop driving the delivery",
    )
    assert 'state="done"} 1.0' not in driver.metrics()


def test_two_nodes_share_the_deliveries_of_many_jobs_each_delivered_once(
    database: str,
    sandbox: SandboxServer,
    group: NodeGroup,
    agent_factory: AgentFactory,
) -> None:
    """Both nodes scan for deliveries: each job's records land once, whichever node drove it."""
    sandbox.faults(latency_ms=0)
    config = node_store(database) + instance_config(sandbox)
    a = group.start(heartbeat_s=1.0, extra_config=config)
    group.start(heartbeat_s=1.0, extra_config=config)
    agent_factory(a, "agent-a", urls=[a.url], extra=AGENT_PROFILES)
    api = a.api()
    wait_connected(api, ["agent-a"])
    jobs = []
    for i in range(12):
        query = f"SELECT {i} * 1000 + g AS id, 'n-' || g AS name FROM generate_series(1, 200) g"  # noqa: S608
        jobs.append(api.submit("sql", {"connection": "pg", "query": query}, sink=SINK))
    for job in jobs:
        sync = wait_synced(api, job["id"], timeout=120)
        assert ("done", 200, 0) == (sync["state"], sync["inserted"], sync["errors"]), sync
    ids = [r["u_id"] for r in sandbox.rows("u_rows", fields="u_id")]
    assert len(ids) == len(set(ids)) == 12 * 200
