"""asyncpg against psycopg 3 (async), side by side in one run, on the PostgreSQL store's hot
operations: insert a job, append a batch of 1,000 records, a claim-like UPDATE ... RETURNING,
and a bare ``SELECT 1`` round trip. Prints per-operation times and the ratio psycopg/asyncpg.

    .venv/bin/pip install "psycopg[binary]"   # the contender; not a dependency of the project
    .venv/bin/python bench/store_driver.py [--url postgresql://root@127.0.0.1:5432/test] [--n 1000] [--rounds 5]

Each driver gets its own schema, made and dropped here; the operations run one at a time on
one connection (the store's writer does the same), each in its own transaction where it
writes, with ``synchronous_commit`` on, as the store commits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg

TABLES = """
CREATE TABLE jobs (id text PRIMARY KEY, queue_seq bigint NOT NULL, plugin text NOT NULL, params text NOT NULL,
    cluster text NOT NULL, state text NOT NULL, attempt int NOT NULL DEFAULT 0, agent text, created_at float8 NOT NULL);
CREATE INDEX jobs_state ON jobs (cluster, state, queue_seq);
CREATE TABLE record_batches (job_id text NOT NULL, attempt int NOT NULL, last_seq bigint NOT NULL,
    first_seq bigint NOT NULL, sizes bytea NOT NULL, data bytea NOT NULL, PRIMARY KEY (job_id, attempt, last_seq));
"""
INSERT_JOB = "INSERT INTO jobs (id, queue_seq, plugin, params, cluster, state, created_at) VALUES ({})"
CLAIM = (
    "UPDATE jobs SET state='running', attempt=attempt+1, agent={} WHERE id = (SELECT id FROM jobs "
    "WHERE cluster='c' AND state='queued' ORDER BY queue_seq LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, attempt"
)
APPEND = "INSERT INTO record_batches (job_id, attempt, last_seq, first_seq, sizes, data) VALUES ({})"
RECORDS = [json.dumps({"id": i, "name": f"user {i}", "mail": f"u{i}@example.net"}).encode() for i in range(1000)]


def marks(driver: str, n: int) -> str:
    return ", ".join(f"${i}" if driver == "asyncpg" else "%s" for i in range(1, n + 1))


async def timed(n: int, op: Callable[[int], Awaitable[Any]]) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds per call of ``op`` over ``n`` calls (after a
    short warm-up). The CPU is the driver's own cost: on two cores the control plane's
    process competes with PostgreSQL for it, so it matters beyond the round trip."""
    for i in range(min(50, n)):
        await op(-i - 1)
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        await op(i)
    return (time.perf_counter() - start) / n, (time.process_time() - cpu) / n


async def run_asyncpg(url: str, schema: str, n: int) -> dict[str, tuple[float, float]]:
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        await conn.execute(TABLES)
        sizes = b"\0" * 4000
        data = b"".join(RECORDS)
        insert, append, claim = INSERT_JOB.format(marks("asyncpg", 7)), APPEND.format(marks("asyncpg", 6)), CLAIM
        out: dict[str, tuple[float, float]] = {}

        async def insert_job(i: int) -> None:
            async with conn.transaction():
                await conn.execute(insert, f"j{i}", i + 100, "sql", '{"q": 1}', "c", "queued", 1.0)

        async def append_batch(i: int) -> None:
            async with conn.transaction():
                await conn.execute(append, "j", 1, (i + 100) * 1000, (i + 99) * 1000 + 1, sizes, data)

        async def claim_one(i: int) -> None:
            async with conn.transaction():
                await conn.fetchrow(claim.format("$1"), "a1")

        out["SELECT 1"] = await timed(n, lambda i: conn.fetchval("SELECT 1"))
        out["insert a job"] = await timed(n, insert_job)
        out["append 1,000 records"] = await timed(max(n // 10, 20), append_batch)
        out["claim (UPDATE ... RETURNING)"] = await timed(n // 2, claim_one)
        return out
    finally:
        await conn.close()


async def run_psycopg(url: str, schema: str, n: int) -> dict[str, tuple[float, float]]:
    conn = await psycopg.AsyncConnection.connect(url, options=f"-c search_path={schema}", autocommit=True)
    try:
        await conn.execute(TABLES.encode())
        sizes = b"\0" * 4000
        data = b"".join(RECORDS)
        insert, append = INSERT_JOB.format(marks("psycopg", 7)), APPEND.format(marks("psycopg", 6))
        out: dict[str, tuple[float, float]] = {}

        async def select_one(i: int) -> None:
            cur = await conn.execute("SELECT 1", prepare=True)
            await cur.fetchone()

        async def insert_job(i: int) -> None:
            async with conn.transaction():
                await conn.execute(insert, (f"j{i}", i + 100, "sql", '{"q": 1}', "c", "queued", 1.0), prepare=True)

        async def append_batch(i: int) -> None:
            async with conn.transaction():
                await conn.execute(append, ("j", 1, (i + 100) * 1000, (i + 99) * 1000 + 1, sizes, data), prepare=True)

        async def claim_one(i: int) -> None:
            async with conn.transaction():
                cur = await conn.execute(CLAIM.format("%s"), ("a1",), prepare=True)
                await cur.fetchone()

        out["SELECT 1"] = await timed(n, select_one)
        out["insert a job"] = await timed(n, insert_job)
        out["append 1,000 records"] = await timed(max(n // 10, 20), append_batch)
        out["claim (UPDATE ... RETURNING)"] = await timed(n // 2, claim_one)
        return out
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    admin = await asyncpg.connect(args.url)
    runs: dict[str, list[dict[str, tuple[float, float]]]] = {"asyncpg": [], "psycopg": []}
    drivers = [("asyncpg", run_asyncpg), ("psycopg", run_psycopg)]
    try:
        # Rounds alternate which driver goes first, and the median is kept: the commit's flush
        # dominates the writes and drifts on a shared machine, so one pass each would rank noise.
        for round_ in range(args.rounds):
            for name, run in drivers if round_ % 2 == 0 else drivers[::-1]:
                schema = f"bench_{name}_{secrets.token_hex(4)}"
                await admin.execute(f"CREATE SCHEMA {schema}")
                try:
                    runs[name].append(await run(args.url, schema, args.n))
                finally:
                    await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()
    for kind, index in (("wall", 0), ("client CPU", 1)):
        results = {
            name: {op: statistics.median(r[op][index] for r in rounds) for op in rounds[0]}
            for name, rounds in runs.items()
        }
        print(f"{kind + ' per call (median)':32} {'asyncpg':>12} {'psycopg 3':>12} {'psycopg/asyncpg':>16}")
        for op, seconds in results["asyncpg"].items():
            other = results["psycopg"][op]
            print(f"{op:32} {seconds * 1e6:>10.0f}us {other * 1e6:>10.0f}us {other / seconds:>15.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
