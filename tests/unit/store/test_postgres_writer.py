"""The PostgreSQL store's group commit: the writes of one loop turn share one transaction, and
writes issued while it commits join the next, in call order; and its queue positions, taken
from blocks reserved ahead."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
from bridgehead_testing.postgres import POSTGRES_URL, postgres_admin
from store_contract import job

from bridgehead.control.store.base import CLI
from bridgehead.control.store.postgres import PostgresStore
from bridgehead.control.store.postgres.schema import QUEUE_BLOCK


@pytest.fixture
async def pg() -> AsyncIterator[tuple[asyncpg.Connection, PostgresStore, str]]:
    admin = await postgres_admin()
    schema = f"bh_test_{secrets.token_hex(6)}"
    await admin.execute(f"CREATE SCHEMA {schema}")
    store = PostgresStore(POSTGRES_URL, schema=schema)
    try:
        yield admin, store, schema
    finally:
        await store.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


async def transactions(admin: asyncpg.Connection, schema: str) -> list[int]:
    """The audit entries' transactions (xmin), in id order."""
    rows = await admin.fetch(f"SELECT xmin::text::bigint FROM {schema}.audit ORDER BY id")  # noqa: S608 - our name
    return [r[0] for r in rows]


async def test_one_loop_turns_writes_commit_together(pg: tuple[asyncpg.Connection, PostgresStore, str]) -> None:
    admin, store, schema = pg
    await store.audit(CLI, "open", {}, 0.0)  # connections open before the measured turn
    writes = [store.audit(CLI, f"w{i}", {}, 1.0) for i in range(20)]
    await asyncio.gather(*writes)
    xids = await transactions(admin, schema)
    assert 1 == len(set(xids[1:])) and xids[0] != xids[1]


async def test_writes_issued_during_a_commit_join_the_next_in_order(
    pg: tuple[asyncpg.Connection, PostgresStore, str],
) -> None:
    admin, store, schema = pg
    await store.audit(CLI, "open", {}, 0.0)
    first = store.audit(CLI, "first", {}, 1.0)
    await asyncio.sleep(0)  # the commit of "first" starts and is in flight now
    later = [store.audit(CLI, f"later{i}", {}, 2.0) for i in range(3)]
    await asyncio.gather(first, *later)
    log = await store.audit_log(0, 10)
    assert ["open", "first", "later0", "later1", "later2"] == [e.action for e in log]
    xids = await transactions(admin, schema)
    assert xids[1] != xids[2] and 1 == len(set(xids[2:]))


async def test_queue_positions_keep_rising_across_reserved_blocks(
    pg: tuple[asyncpg.Connection, PostgresStore, str],
) -> None:
    """Near the end of its block the store reserves the next one; numbering never goes back."""
    _admin, store, _schema = pg
    store._seq_end = store._seq_next + 3  # as if the block were nearly used up
    seqs: list[int] = []
    for i in range(12):
        made = job(f"j{i}")
        await store.insert_job(made)
        seqs.append(made.queue_seq)
        await asyncio.sleep(0.01)  # the reservation's round trip lands meanwhile
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[-1] - seqs[0] > QUEUE_BLOCK  # it moved to the next block
    assert [f"j{i}" for i in range(12)] == [j.id for j in await store.jobs_in_state("queued")]
