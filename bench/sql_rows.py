"""SQL: rows per second from PostgreSQL into the control plane's store, against pyodbc alone.

Both sides run the same query over the same driver (psqlODBC with a server-side cursor, as the
plugin sets it up) on a table of mixed types: bigint, text, numeric, timestamptz, boolean,
date, double. Raw: ``cursor.fetchmany`` in a loop, doing nothing with the rows. Relay: an
``sql`` job through a real control plane and agent, timed from submit until the job has
succeeded, which is when every record is durable in the control plane's SQLite store. The
runs alternate (raw, relay, raw, relay...) so that both see the same machine.

    .venv/bin/python bench/sql_rows.py [--rows 1000000] [--runs 2] [--fetch-size 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyodbc
from _cluster import cluster, timed_relay_job
from bridgehead_testing.rss import RssSampler

BASE = "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=test;UID=root"
TABLE = "bench_sql_rows"


def prepare(rows: int) -> None:
    cn = pyodbc.connect(BASE, autocommit=True)
    cur = cn.cursor()
    cur.execute("SELECT count(*) FROM pg_tables WHERE tablename = ?", TABLE)
    if cur.fetchone()[0]:
        cur.execute(f"SELECT count(*) FROM {TABLE}")  # noqa: S608 - a constant
        if cur.fetchone()[0] == rows:
            return
        cur.execute(f"DROP TABLE {TABLE}")
    print(f"creating {TABLE} with {rows:,} rows ...", flush=True)
    cur.execute(
        f"CREATE TABLE {TABLE} AS SELECT g AS id, 'name-' || g AS name, (g * 1.25)::numeric(14,2) AS amount, "  # noqa: S608
        "timestamptz '2024-01-01 00:00+00' + g * interval '1 second' AS created, (g % 2 = 0) AS flag, "
        "date '2024-01-01' + (g % 365) AS day, g * 0.5::float8 AS score "
        f"FROM generate_series(1, {rows}) g"
    )
    cur.execute(f"VACUUM ANALYZE {TABLE}")
    cn.close()


def raw(query: str, fetch_size: int) -> tuple[int, float]:
    cn = pyodbc.connect(f"{BASE};UseDeclareFetch=1;Fetch={fetch_size};BoolsAsChar=0")
    cur = cn.cursor()
    start = time.perf_counter()
    cur.execute(query)
    n = 0
    while rows := cur.fetchmany(fetch_size):
        n += len(rows)
    elapsed = time.perf_counter() - start
    cn.close()
    return n, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--fetch-size", type=int, default=1000)
    args = parser.parse_args()
    prepare(args.rows)
    query = f"SELECT * FROM {TABLE} ORDER BY id"  # noqa: S608 - a constant
    agent_extra = (
        f'[connections.bench]\nplugin = "sql"\nconnection_string = "{BASE.replace(";UID=root", "")}"\n'
        f'credential = "bench"\nfetch_size = {args.fetch_size}\n\n[credentials.bench]\nusername = "root"\n'
    )
    raw_rates: list[float] = []
    relay_rates: list[float] = []
    with cluster(agent_extra=agent_extra) as (control, agent):
        api = control.api()
        for run in range(1, args.runs + 1):
            n, elapsed = raw(query, args.fetch_size)
            raw_rates.append(n / elapsed)
            print(f"run {run}: raw pyodbc fetchmany  {n:>10,} rows in {elapsed:6.2f} s = {n / elapsed:>9,.0f} rows/s")
            pids = {"agent": agent.proc.pid, "control plane": control.proc.pid}  # type: ignore[union-attr]
            with RssSampler(pids) as sampler:
                elapsed = timed_relay_job(api, "sql", {"connection": "bench", "query": query}, n, "rows")
            print(f"run {run}: peak RSS while streaming: {sampler.summary()}")
            relay_rates.append(n / elapsed)
            rate = n / elapsed
            print(f"run {run}: relay into the store  {n:>10,} rows in {elapsed:6.2f} s = {rate:>9,.0f} rows/s")
    raw_median, relay_median = statistics.median(raw_rates), statistics.median(relay_rates)
    print(
        f"\nmedian: raw {raw_median:,.0f} rows/s, relay {relay_median:,.0f} rows/s, "
        f"ratio {relay_median / raw_median:.2f}x (goal >= 0.7x)"
    )


if __name__ == "__main__":
    main()
