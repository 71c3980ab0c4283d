"""ServiceNow sink: records/s into the instance-like sandbox, against a bare aiohttp loop.

One sandbox (``bridgehead-sandbox``, the stand-in instance) with its instance-like defaults:
tables and fields only as defined, asynchronous ``insertMultiple`` keyed by column labels,
session cookies, case-insensitive matching. Two modes, each measured two ways per run:

    import     insertMultiple (asynchronous, labels) into a staging table with a transform
               map, each batch's row outcomes read back from sys_import_set_row
    table      a table upsert: one IN lookup per batch (under the URL budget), then a POST per
               new record, max_in_flight at once

    sink       an ``echo`` job's N records through a real control plane and agent, delivered
               by the control plane's sink (batches of 200, 4 in flight, OAuth client
               credentials); timed from the delivery's start to its end as recorded
    bare loop  aiohttp alone doing the same requests under the same rules: no cookies, the
               same batches (already built), keys, lookups, polling and concurrency
    ceiling    wrk posting one 200-record batch over and over: the sandbox's own limit

Each run writes into fresh tables, so both sides always insert; runs alternate.

    .venv/bin/python bench/servicenow_sink.py [--records 20000] [--runs 3] [--mode import|table|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from bridgehead_testing.harness import Agent, ControlPlane, wait_connected
from bridgehead_testing.sandbox_server import SandboxServer

BATCH = 200
IN_FLIGHT = 4
PAD = 100
POLL_S = 0.05


def sandbox_config(runs: int) -> str:
    lines = ["[oauth]", "client_credentials = true", ""]
    for side in ("sink", "bare", "wrk"):
        for run in range(runs):
            target = f"u_bench_{side}_target_{run}"
            lines += [
                f"[transforms.u_bench_{side}_{run}]",
                f'target = "{target}"',
                'coalesce = ["u_number"]',
                f"[transforms.u_bench_{side}_{run}.fields]",
                'u_number = "u_n"',
                'u_pad = "u_pad"',
            ]
            for table in (target, f"u_bench_table_{side}_{run}"):
                lines += [f"[tables.{table}.fields.u_number]", f"[tables.{table}.fields.u_pad]", "max_length = 255"]
    return "\n".join(lines) + "\n"


def rows(count: int, keys: tuple[str, str] = ("u_n", "u_pad")) -> list[dict[str, str]]:
    # What the sink makes of an echo record {"n": i, "pad": "x" * PAD} with the map below.
    return [{keys[0]: str(i), keys[1]: "x" * PAD} for i in range(count)]


async def _token(session: aiohttp.ClientSession, url: str) -> dict[str, str]:
    form = {"grant_type": "client_credentials", "client_id": "bridgehead", "client_secret": "bridgehead"}
    async with session.post(url + "/oauth_token.do", data=form) as response:
        token = (await response.json())["access_token"]
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"}


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT), cookie_jar=aiohttp.DummyCookieJar())


async def bare_import(url: str, staging: str, count: int) -> float:
    """insertMultiple by labels ("N", "Pad": the staging columns u_n, u_pad), then each batch's
    rows read back from sys_import_set_row until transformed, as the sink does."""
    async with _session() as session:
        headers = await _token(session, url)
        records = rows(count, ("N", "Pad"))
        bodies = [json.dumps({"records": records[i : i + BATCH]}).encode() for i in range(0, count, BATCH)]
        queue = iter(bodies)
        target = f"{url}/api/now/import/{staging}/insertMultiple"

        async def outcomes(import_set: str, expected: int) -> None:
            params = {
                "sysparm_query": f"sys_import_set={import_set}^ORDERBYsys_import_row",
                "sysparm_fields": "sys_import_row,sys_import_state,sys_import_state_comment,sys_target_sys_id",
                "sysparm_limit": str(expected + 1),
                "sysparm_exclude_reference_link": "true",
            }
            while True:
                async with session.get(f"{url}/api/now/table/sys_import_set_row", params=params, headers=headers) as r:
                    result = (await r.json())["result"]
                if len(result) >= expected and all(x["sys_import_state"] not in ("", "pending") for x in result):
                    return
                await asyncio.sleep(POLL_S)

        async def lane() -> None:
            for body in queue:
                async with session.post(target, data=body, headers=headers) as response:
                    answer: dict[str, Any] = await response.json()
                    if response.status != 201:
                        raise SystemExit(f"bare loop: HTTP {response.status}")
                await outcomes(answer["import_set_id"], BATCH)

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(2 * IN_FLIGHT)))  # the sink's lanes
        return time.perf_counter() - started


async def bare_table(url: str, table: str, count: int) -> float:
    """Batch by batch: one IN lookup, then a POST per record not found, IN_FLIGHT at once."""
    async with _session() as session:
        headers = await _token(session, url)
        records = rows(count, ("u_number", "u_pad"))
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def post(record: dict[str, str]) -> None:
            async with slots, session.post(f"{url}/api/now/table/{table}", json=record, headers=headers) as response:
                await response.read()
                if response.status != 201:
                    raise SystemExit(f"bare loop: HTTP {response.status}")

        started = time.perf_counter()
        for first in range(0, count, BATCH):
            batch = records[first : first + BATCH]
            params = {
                "sysparm_query": "u_numberIN" + ",".join(r["u_number"] for r in batch),
                "sysparm_limit": str(2 * len(batch)),
                "sysparm_fields": "sys_id,u_number,u_pad",
                "sysparm_suppress_pagination_header": "true",
            }
            async with session.get(f"{url}/api/now/table/{table}", params=params, headers=headers) as response:
                found = {r["u_number"].casefold() for r in (await response.json())["result"]}
            await asyncio.gather(*(post(r) for r in batch if r["u_number"].casefold() not in found))
        return time.perf_counter() - started


def wrk_ceiling(url: str, staging: str) -> float | None:
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk): no ceiling measured")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        body = json.dumps({"records": rows(BATCH, ("N", "Pad"))})
        script = Path(tmp) / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(body)}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            'wrk.headers["Accept"] = "application/json"\n'
            'wrk.headers["Authorization"] = "Basic YWRtaW46YWRtaW4="\n'
        )
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{IN_FLIGHT}",
                "-d5s",
                "-s",
                str(script),
                f"{url}/api/now/import/{staging}/insertMultiple",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1]) * BATCH
    return None


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


@contextmanager
def bench_cluster(workdir: Path, instance: str) -> Iterator[ControlPlane]:
    """A control plane with ``instance`` configured and one connected agent (as bench/_cluster.py,
    which takes no configuration of its own)."""
    (workdir / "cp").mkdir()
    control = ControlPlane(workdir / "cp", extra_config='[store]\nsynchronous = "full"\n' + instance).start()
    agent = Agent(workdir, "bench-agent", [control.url], max_concurrent_jobs=8, options={"synchronous": "full"})
    try:
        agent.enroll(control.enrollment_token())
        agent.start()
        wait_connected(control.api(), ["bench-agent"])
        yield control
    finally:
        agent.stop()
        control.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mode", choices=("import", "table", "both"), default="both")
    args = parser.parse_args()
    os.environ["BH_BENCH_SN_SECRET"] = "bridgehead"  # noqa: S105 - the sandbox's documented demo client
    with tempfile.TemporaryDirectory(prefix="bridgehead-bench-sn-") as tmp:
        sandbox = SandboxServer(Path(tmp) / "sandbox", sandbox_config(args.runs)).start()
        tables = [f"u_bench_sink_{run}" for run in range(args.runs)]
        tables += [f"u_bench_table_sink_{run}" for run in range(args.runs)]
        instance = (
            "\n[servicenow.bench]\n"
            f'url = "{sandbox.url}"\nclient_id = "bridgehead"\nclient_secret_env = "BH_BENCH_SN_SECRET"\n'
            f"tables = {json.dumps(tables)}\n"
            f"batch_size = {BATCH}\nmax_in_flight = {IN_FLIGHT}\nmax_requests_per_s = 10000\n"
            f"import_poll_s = {POLL_S}\n"
        )
        try:
            with bench_cluster(Path(tmp), instance) as control:
                for mode in ("import", "table") if args.mode == "both" else (args.mode,):
                    measure(control, sandbox, args, mode)
            # Last: the sandbox goes on transforming wrk's asynchronous import sets after it stops.
            ceiling = wrk_ceiling(sandbox.url, "u_bench_wrk_0")
            if ceiling is not None:
                print(
                    f"\nsandbox ceiling (wrk, {IN_FLIGHT} connections, {BATCH}-record batches): "
                    f"{ceiling:,.0f} records/s"
                )
        finally:
            sandbox.stop()


def measure(control: object, sandbox: SandboxServer, args: argparse.Namespace, mode: str) -> None:
    api = control.api()  # type: ignore[attr-defined]
    sink_rates: list[float] = []
    bare_rates: list[float] = []
    print(f"\n{mode}: {args.records:,} records per run")
    for run in range(args.runs):
        sink: dict[str, object]
        if mode == "import":
            sink = {"servicenow": "bench", "import_set": f"u_bench_sink_{run}", "map": {"u_n": "n", "u_pad": "pad"}}
        else:
            sink = {
                "servicenow": "bench",
                "table": f"u_bench_table_sink_{run}",
                "coalesce": ["u_number"],
                "map": {"u_number": "n", "u_pad": "pad"},
                "passthrough": False,
            }
        job = api.submit("echo", {"count": args.records, "size": PAD}, sink=sink)
        api.wait_done(job["id"], timeout=600)
        cp_cpu, sb_cpu = cpu_seconds(control.proc.pid), cpu_seconds(sandbox.pid)  # type: ignore[attr-defined]
        while True:
            sync = api.job(job["id"])["sync"]
            if sync["state"] in ("done", "failed"):
                break
            # Seldom: each poll is an HTTPS request (a TLS handshake) the control plane serves on
            # the loop that delivers, a load the bare loop does not carry; the times measured
            # are the control plane's own (started_at, finished_at), so no precision is lost.
            time.sleep(0.5)
        if sync["state"] != "done" or sync["inserted"] != args.records:
            raise SystemExit(f"sink run failed: {sync}")
        sink_rate = args.records / (sync["finished_at"] - sync["started_at"])
        cp_used = cpu_seconds(control.proc.pid) - cp_cpu  # type: ignore[attr-defined]
        sb_used = cpu_seconds(sandbox.pid) - sb_cpu
        seconds = args.records / sink_rate
        own_cpu, sb_cpu = time.process_time(), cpu_seconds(sandbox.pid)
        if mode == "import":
            bare_s = asyncio.run(bare_import(sandbox.url, f"u_bench_bare_{run}", args.records))
        else:
            bare_s = asyncio.run(bare_table(sandbox.url, f"u_bench_table_bare_{run}", args.records))
        bare_used, sb_bare_used = time.process_time() - own_cpu, cpu_seconds(sandbox.pid) - sb_cpu
        bare_rate = args.records / bare_s
        sink_rates.append(sink_rate)
        bare_rates.append(bare_rate)
        print(
            f"run {run + 1}: sink {sink_rate:8,.0f} records/s, bare aiohttp loop {bare_rate:8,.0f} records/s "
            f"(during the sink: control plane {cp_used / seconds:.2f} core, sandbox {sb_used / seconds:.2f} core; "
            f"during the loop: loop {bare_used / bare_s:.2f} core, sandbox {sb_bare_used / bare_s:.2f} core)"
        )
    s, b = statistics.median(sink_rates), statistics.median(bare_rates)
    ratios = [x / y for x, y in zip(sink_rates, bare_rates, strict=True)]
    print(
        f"{mode} median: sink {s:,.0f} records/s, bare loop {b:,.0f} records/s: "
        f"{s / b:.2f}x (runs {min(ratios):.2f}-{max(ratios):.2f}; goal >= 0.9x)"
    )


if __name__ == "__main__":
    main()
