"""Schedules with two control-plane nodes on one PostgreSQL database (issue 19), both running
their scheduler: each occurrence makes one job and is counted once (``runs``,
``skipped_overlaps``), and a schedule created, disabled or deleted on one node is what the
other node fires, or does not, once the first is dead.

The scheduler's clock is moved (``clock.OFFSET_ENV``, tests only) so that the first minute
boundary comes ~30 s after the test starts rather than up to a minute later; cron has minute
granularity, so the test spans two boundaries (about 100 s). Jobs are counted in the
database, by their idempotency key ``schedule:NAME:OCCURRENCE``."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from bridgehead_testing.harness import Agent, Api, scaled, wait_connected, wait_until
from bridgehead_testing.node_group import NodeGroup
from bridgehead_testing.nodes import IDENTITY_SECRET_ENV, fresh_database, node_store

from bridgehead.control.schedules.clock import OFFSET_ENV

AgentFactory = Callable[..., Agent]
EVERY_MINUTE = "* * * * *"
SLOW = {"sleep_s": 300}  # a run still going for as long as the test lasts


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(IDENTITY_SECRET_ENV, secrets.token_urlsafe(32))
    with fresh_database() as url:
        yield url


@pytest.fixture
def group(tmp_path: Path) -> Iterator[NodeGroup]:
    nodes = NodeGroup(tmp_path / "nodes")
    yield nodes
    nodes.stop()


def create(api: Api, name: str, params: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    job = {"plugin": "echo", "params": {"records": [{"hello": name}]} if params is None else params}
    body = {"name": name, "cron": EVERY_MINUTE, "timezone": "UTC", "job": job, **extra}
    status, created = api.request("POST", "/api/v1/schedules", body)
    assert 201 == status, created
    return dict(created)


def get(api: Api, name: str) -> dict[str, Any]:
    status, found = api.request("GET", f"/api/v1/schedules/{name}")
    assert 200 == status, found
    return dict(found)


def scheduled_jobs(database: str) -> dict[str, list[float]]:
    """Each schedule occurrence's key: the creation times of its jobs (one, if all is well)."""

    async def read() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(
                "SELECT idempotency_key, created_at FROM jobs WHERE idempotency_key LIKE 'schedule:%'"
            )
            return rows
        finally:
            await conn.close()

    found: dict[str, list[float]] = {}
    for key, created_at in asyncio.run(read()):
        found.setdefault(key, []).append(created_at)
    return found


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_each_occurrence_fires_once_across_two_nodes_and_survives_one_dying(
    database: str, group: NodeGroup, agent_factory: AgentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    offset = 60 * (now // 60) + 90 - now  # the schedulers' clock: 30 s past a minute, now
    monkeypatch.setenv(OFFSET_ENV, str(offset))
    a = group.start(heartbeat_s=1.0, extra_config=node_store(database))
    b = group.start(heartbeat_s=1.0, extra_config=node_store(database))
    api_a, api_b = a.api(), b.api()
    agent_factory(a, "agent-a", urls=[a.url])
    wait_connected(api_a, ["agent-a"])

    # "busy": created disabled and run by hand, so its previous run is going at the boundary.
    create(api_a, "busy", params=SLOW, enabled=False)
    status, slow = api_a.request("POST", "/api/v1/schedules/busy/run")
    assert 201 == status, slow
    first = api_a.request("PATCH", "/api/v1/schedules/busy", {"enabled": True})[1]["next_run_at"]
    assert first == create(api_b, "quick")["next_run_at"]  # created on B: both nodes fire it

    # The first boundary: both schedulers are due at once; one job, one run, one skip.
    key = f"schedule:quick:{first}"
    wait_until(lambda: get(api_a, "quick")["runs"] >= 1, scaled(80), "quick's first run")
    busy = wait_until(lambda: (s := get(api_b, "busy"))["skipped_overlaps"] >= 1 and s, scaled(20), "busy skipped")
    time.sleep(3)  # the other node's late pass, if any, would count again by now
    quick, busy = get(api_a, "quick"), get(api_b, "busy")
    assert (1, 0) == (quick["runs"], quick["skipped_overlaps"]), quick
    assert (1, 1, slow["id"]) == (busy["runs"], busy["skipped_overlaps"], busy["last_job_id"]), busy
    jobs = scheduled_jobs(database)
    assert 1 == len(jobs[key]), jobs
    assert {key} == {k for k in jobs if not k.startswith("schedule:busy:manual:")}, jobs
    second = quick["next_run_at"]
    assert epoch(second) - epoch(first) == 60

    # Changes made on A: B must not fire what A disabled or deleted.
    assert 200 == api_a.request("PATCH", "/api/v1/schedules/busy", {"enabled": False})[0]
    assert 200 == api_a.request("DELETE", "/api/v1/schedules/quick")[0]
    # A change on B, 40 s past the boundary, starts B's longest sleep (nothing enabled is due):
    # without word of A's commits, B would next look 30 s later, 10 s past the next boundary.
    time.sleep(max(0.0, epoch(first) - offset + 40 - time.time()))
    create(api_b, "nudge", enabled=False)
    # A schedule created on A, which then dies: B fires it at its time.
    assert second == create(api_a, "fresh")["next_run_at"]
    a.kill9()
    fresh = wait_until(lambda: (s := get(api_b, "fresh"))["runs"] >= 1 and s, scaled(60), "fresh's first run on B")
    time.sleep(3)
    jobs = scheduled_jobs(database)
    fresh_key = f"schedule:fresh:{second}"
    assert 1 == len(jobs[fresh_key]), jobs
    assert jobs[fresh_key][0] + offset - epoch(second) < scaled(5), (jobs[fresh_key], offset, second)
    assert f"schedule:quick:{second}" not in jobs and not any(k.startswith("schedule:busy:2") for k in jobs), jobs
    busy = get(api_b, "busy")
    assert (False, 1, 1) == (busy["enabled"], busy["runs"], busy["skipped_overlaps"]), busy
    assert (1, 0) == (get(api_b, "fresh")["runs"], fresh["skipped_overlaps"])
