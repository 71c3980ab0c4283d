"""Two control-plane nodes, three agents and a run of jobs mixed across plugins, with their
PostgreSQL stopped for 10 s in the middle (issue 19): both nodes stop acknowledging, wait for
the database and start again by themselves, the agents back off and come back, and every job
ends once, its records there once, no SQL insert (not safe to repeat) run twice.

The database is a private server the test can stop (``pg_server``), so other tests keep the
shared one; the SQL jobs' witness table is on the shared server, which stays up."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from bridgehead_testing.databases import PG, PG_WRITE_PROFILE, admin
from bridgehead_testing.harness import Agent, Api, scaled, wait_until
from bridgehead_testing.nodes import IDENTITY_SECRET_ENV, running_nodes
from bridgehead_testing.pg_server import PgServer

JOBS = 300
OUTAGE_S = 10.0


@pytest.fixture
def store_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[PgServer]:
    monkeypatch.setenv(IDENTITY_SECRET_ENV, secrets.token_urlsafe(32))
    with PgServer() as pg:
        pg.start()

        async def create() -> None:
            conn = await asyncpg.connect(pg.url(), timeout=10)
            try:
                await conn.execute("CREATE DATABASE bh")
            finally:
                await conn.close()

        asyncio.run(create())
        yield pg


def done_count(api: Api) -> int:
    return len(api.request("GET", "/api/v1/jobs?state=succeeded&limit=1000")[1]["jobs"])


def all_ended(api: Api) -> bool:
    try:
        return not any(api.request("GET", f"/api/v1/jobs?state={s}&limit=1")[1]["jobs"] for s in ("queued", "running"))
    except OSError:  # the node is still coming back
        return False


def test_postgresql_stopped_for_10_s_under_two_nodes_loses_and_doubles_nothing(
    store_server: PgServer, tmp_path: Path
) -> None:
    witness = f"bh_nodes_outage_{secrets.token_hex(4)}"
    conn = admin(PG)
    conn.cursor().execute(f"CREATE TABLE {witness} (job text NOT NULL)")
    agents: list[Agent] = []
    try:
        with running_nodes(tmp_path, store_server.url("bh"), ["127.0.0.1", "127.0.0.1"]) as (a, b):
            pids = [node.proc.pid for node in (a, b) if node.proc is not None]
            for name, urls in (("agent-1", [a.url, b.url]), ("agent-2", [b.url, a.url]), ("agent-3", [a.url, b.url])):
                agent = Agent(tmp_path / "agents", name, urls, extra=PG_WRITE_PROFILE, max_concurrent_jobs=8)
                agent.enroll(a.enrollment_token())
                agents.append(agent)
            jobs: dict[str, dict[str, Any]] = {}
            for i in range(JOBS):
                api = (a if i % 2 else b).api()
                if i % 3 == 0:
                    query = f"INSERT INTO {witness} (job) SELECT 'j{i}' FROM pg_sleep(0.2) RETURNING job"  # noqa: S608
                    jobs[f"j{i}"] = {"plugin": "sql", **api.submit("sql", {"connection": "pg_write", "query": query})}
                else:
                    params = {"records": [{"i": i, "k": k} for k in range(3)], "sleep_s": 0.2}
                    jobs[f"j{i}"] = {"plugin": "echo", **api.submit("echo", params)}
            for agent in agents:
                agent.start()
            wait_until(lambda: done_count(b.api()) >= 30, scaled(60), "the first jobs done")
            assert done_count(b.api()) < JOBS - 100  # premise: most of the run is still to come
            store_server.stop()
            stopped_at = time.monotonic()
            for node in (a, b):  # both notice (their next write fails) and wait
                wait_until(lambda n=node: "is not usable" in n.log_text(), scaled(20), f"{node.url} to wait")
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
            store_server.start()
            wait_until(lambda: all_ended(b.api()), scaled(180), "every job ended after the outage")
            # Both came back by themselves, in the same processes (they re-executed themselves).
            assert [node.proc.pid for node in (a, b) if node.proc is not None and node.proc.poll() is None] == pids
            api = b.api()
            counted = f"SELECT job, count(*) FROM {witness} GROUP BY job"  # noqa: S608 - our table
            ran = {row[0]: int(row[1]) for row in conn.cursor().execute(counted)}
            assert max(ran.values()) == 1, {k: v for k, v in ran.items() if v > 1}
            outcomes: dict[str, int] = {}
            for marker, job in jobs.items():
                done = api.job(job["id"])
                outcomes[done["state"]] = outcomes.get(done["state"], 0) + 1
                if done["state"] != "succeeded":
                    assert job["plugin"] == "sql" and done["error_code"] == "agent_lost", done
                    continue
                records = api.records(job["id"])
                if job["plugin"] == "echo":
                    assert [(r["i"], r["k"]) for r in records] == [(int(marker[1:]), k) for k in range(3)], done
                else:
                    assert [r["job"] for r in records] == [marker] and ran.get(marker) == 1, (done, records)
            assert set(ran) <= set(jobs)
            assert outcomes.get("succeeded", 0) >= JOBS - 10, outcomes
            print(f"outcomes after a {OUTAGE_S:g} s outage under two nodes: {outcomes}")
    finally:
        for agent in agents:
            agent.stop(timeout=10)
        conn.cursor().execute(f"DROP TABLE IF EXISTS {witness}")
        conn.close()
