"""Schema versions on both backends: a fresh database is made at the latest version, a data dir
made before versions were kept is version 1 with its rows, and a newer schema is refused."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from bridgehead_testing.postgres import POSTGRES_URL, postgres_admin

from bridgehead.control.store.postgres import PostgresStore
from bridgehead.control.store.postgres import schema as pg_schema
from bridgehead.control.store.postgres.store import display_url
from bridgehead.control.store.sqlite import SqliteStore
from bridgehead.control.store.sqlite import schema as sqlite_schema
from bridgehead.control.store.versions import SchemaTooNew


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


async def test_a_fresh_sqlite_database_is_made_at_the_latest_version(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "control.db")
    await store.close()
    assert sqlite_schema.LATEST == user_version(tmp_path / "control.db")


async def test_a_sqlite_data_dir_from_before_versions_is_version_1_with_its_rows(tmp_path: Path) -> None:
    """What every release before versions made: the tables, no version (user_version 0)."""
    path = tmp_path / "control.db"
    with sqlite3.connect(path) as db:
        for script in (sqlite_schema.SCHEMA, sqlite_schema.SINK_SCHEMA, sqlite_schema.SCHEDULE_SCHEMA):
            db.executescript(script)
        db.executescript(sqlite_schema.RELEASE_SCHEMA)
        db.execute(
            "INSERT INTO jobs (queue_seq, id, plugin, params, cluster, state, max_attempts, timeout_s, created_at) "
            "VALUES (7, 'old', 'sql', '{}', 'c', 'succeeded', 3, 60, 1.0)"
        )
    assert 0 == user_version(path)
    store = SqliteStore(path)
    try:
        found = await store.get_job("old")
        assert found is not None and ("succeeded", 7) == (found.state, found.queue_seq)
    finally:
        await store.close()
    assert 1 == user_version(path)


async def test_a_newer_sqlite_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "control.db"
    await SqliteStore(path).close()
    newer = sqlite_schema.LATEST + 1
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {newer}")
    with pytest.raises(SchemaTooNew) as refused:
        SqliteStore(path)
    assert f"version {newer}" in str(refused.value) and f"version {sqlite_schema.LATEST}" in str(refused.value)
    assert str(path) in str(refused.value)
    assert newer == user_version(path)


@pytest.fixture
async def pg_schema_name() -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    admin = await postgres_admin()
    name = f"bh_test_{secrets.token_hex(6)}"
    await admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield admin, name
    finally:
        await admin.execute(f"DROP SCHEMA {name} CASCADE")
        await admin.close()


async def test_a_fresh_postgres_schema_is_made_once_at_the_latest_version(
    pg_schema_name: tuple[asyncpg.Connection, str],
) -> None:
    admin, name = pg_schema_name
    for _ in range(2):  # a restart finds nothing to do
        await PostgresStore(POSTGRES_URL, schema=name).close()
    versions = await admin.fetch(f"SELECT version FROM {name}.schema_version ORDER BY version")  # noqa: S608 - our name
    assert list(range(1, pg_schema.LATEST + 1)) == [v[0] for v in versions]


async def test_a_newer_postgres_schema_is_refused(pg_schema_name: tuple[asyncpg.Connection, str]) -> None:
    admin, name = pg_schema_name
    await PostgresStore(POSTGRES_URL, schema=name).close()
    newer = pg_schema.LATEST + 1
    await admin.execute(f"INSERT INTO {name}.schema_version (version) VALUES ($1)", newer)  # noqa: S608 - our name
    with pytest.raises(SchemaTooNew) as refused:
        PostgresStore(POSTGRES_URL, schema=name)
    assert f"version {newer}" in str(refused.value) and f"version {pg_schema.LATEST}" in str(refused.value)
    assert display_url(POSTGRES_URL) in str(refused.value)
