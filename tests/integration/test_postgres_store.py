"""The control plane on PostgreSQL: a real server process and a real agent run jobs end to end,
and a restart of the control plane keeps them (the store is the database, not the data dir)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator

import asyncpg
import pytest
from bridgehead_testing.harness import Agent, ControlPlane, wait_connected
from bridgehead_testing.postgres import POSTGRES_URL, postgres_admin

AgentFactory = Callable[..., Agent]


def admin(sql: str) -> object:
    async def run() -> object:
        conn = await postgres_admin()
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A database of its own, dropped afterwards; its URL. The password is read from an env
    var as configured (trust auth ignores it here, but the path to it is the real one)."""
    name = f"bh_it_{secrets.token_hex(6)}"
    admin(f"CREATE DATABASE {name}")
    monkeypatch.setenv("BH_TEST_PG_PASSWORD", "not-needed-with-trust")
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def count_jobs(url: str) -> object:
    async def run() -> object:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval("SELECT count(*) FROM jobs WHERE state='succeeded'")
        finally:
            await conn.close()

    return asyncio.run(run())


def test_jobs_run_end_to_end_on_postgresql_and_survive_a_restart(
    database: str, control_factory: Callable[..., ControlPlane], agent_factory: AgentFactory
) -> None:
    store = f'[store]\nbackend = "postgresql"\ndatabase = "{database}"\npassword_env = "BH_TEST_PG_PASSWORD"\n'
    control = control_factory(heartbeat_s=1.0, extra_config=store)
    agent_factory(control)
    api = control.api()
    wait_connected(api, ["agent-1"])
    jobs = [api.submit("echo", {"count": 5 + i}) for i in range(10)]
    for i, job in enumerate(jobs):
        done = api.wait_done(job["id"])
        assert ("succeeded", 5 + i) == (done["state"], done["record_count"]), done
    first = [api.records(job["id"]) for job in jobs]
    assert not (control.data_dir / "control.db").exists()  # nothing went to SQLite
    assert 10 == count_jobs(database)

    assert 0 == control.stop()
    control.start()
    api = control.api()
    assert first == [api.records(job["id"]) for job in jobs]
    assert ["succeeded"] * 10 == [api.job(job["id"])["state"] for job in jobs]
    wait_connected(api, ["agent-1"])  # the agent reconnects, and takes new jobs
    later = api.submit("echo", {"count": 3})
    assert ("succeeded", 3) == (lambda d: (d["state"], d["record_count"]))(api.wait_done(later["id"]))
    assert 11 == count_jobs(database)
