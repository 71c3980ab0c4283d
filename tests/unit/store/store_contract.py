"""Helpers of the store contract suite (the fixtures are in conftest.py)."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import asyncpg

from bridgehead.control.store.base import JobRow, Store

Reopen = Callable[[], Store]  # another store over the same data (a restart, or another process)

_emptied: list[str] = []  # this worker's schemas, migrated and empty, for the next test
made_schemas: list[str] = []  # every schema this worker made (dropped at its end)


async def empty_schema(admin: asyncpg.Connection) -> str:
    if _emptied:
        return _emptied.pop()
    schema = f"bh_test_{secrets.token_hex(6)}"
    await admin.execute(f"CREATE SCHEMA {schema}")
    made_schemas.append(schema)
    return schema


async def give_back(admin: asyncpg.Connection, schema: str) -> None:
    """Empty the schema for the next test: as a new one, but for its migrated tables."""
    async with admin.transaction():
        for (table,) in await admin.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname=$1 AND tablename <> 'schema_version'", schema
        ):
            await admin.execute(f"DELETE FROM {schema}.{table}")  # noqa: S608 - names from the catalog
        for (sequence,) in await admin.fetch("SELECT sequencename FROM pg_sequences WHERE schemaname=$1", schema):
            await admin.execute("SELECT setval($1::regclass, 1, false)", f"{schema}.{sequence}")
    _emptied.append(schema)


def job(job_id: str, key: str | None = None, sink: dict[str, str] | None = None, cluster: str = "c") -> JobRow:
    return JobRow(id=job_id, plugin="sql", params={"q": job_id}, cluster=cluster, idempotency_key=key, sink=sink)


async def running(store: Store, job_id: str, sink: dict[str, str] | None = None) -> None:
    """A job on its first attempt, on agent "a1"."""
    await store.insert_job(job(job_id, sink=sink))
    await store.start_attempt(job_id, 1, "a1", 10.0)
