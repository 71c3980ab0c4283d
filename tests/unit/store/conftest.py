"""The store contract suite runs every test once per backend: ``sqlite`` (a file in a temp dir),
``memory``, and ``postgres`` (a schema of its own per test in the local PostgreSQL). ``reopen()``
opens another store over the same data: a restart, or (while the first is still open) another
process such as the CLI. Without a reachable PostgreSQL the postgres tests fail: they never skip.

A PostgreSQL schema is made and migrated once and then handed from test to test within one
xdist worker, emptied in between (every table's rows deleted, every sequence reset), and
dropped when the worker ends: creating the tables costs ~0.3 s a test, emptying them ~5 ms.
No two workers share a schema, and no two tests of one worker run at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from bridgehead_testing.postgres import POSTGRES_URL, postgres_admin
from store_contract import Reopen, empty_schema, give_back, made_schemas

from bridgehead.control.store.base import Store
from bridgehead.control.store.memory import MemoryState, MemoryStore
from bridgehead.control.store.postgres import PostgresStore
from bridgehead.control.store.sqlite import SqliteStore


@pytest.fixture(scope="session", autouse=True)
def drop_postgres_schemas() -> Iterator[None]:
    yield
    if not made_schemas:
        return

    async def drop() -> None:
        admin = await postgres_admin()
        try:
            for schema in made_schemas:
                await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await admin.close()

    asyncio.run(drop())


@pytest.fixture(params=["sqlite", "memory", "postgres"])
async def opened(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Reopen]:
    stores: list[Store] = []
    state = MemoryState()
    admin = await postgres_admin() if request.param == "postgres" else None
    schema = await empty_schema(admin) if admin is not None else ""

    def reopen() -> Store:
        store: Store
        if request.param == "sqlite":
            store = SqliteStore(tmp_path / "control.db")
        elif request.param == "memory":
            store = MemoryStore(state)
        else:
            store = PostgresStore(POSTGRES_URL, schema=schema)
        stores.append(store)
        return store

    try:
        yield reopen
    finally:
        for store in stores:
            await store.close()
        if admin is not None:
            try:
                await give_back(admin, schema)
            finally:
                await admin.close()


@pytest.fixture
def store(opened: Reopen) -> Store:
    return opened()


@pytest.fixture
def reopen(opened: Reopen, store: Store) -> Reopen:
    return opened
