"""ServiceNow sink: records/s into the sandbox's Import Set API, against a bare aiohttp loop.

One sandbox (``bridgehead-sandbox``, the stand-in instance) with a transform map per staging
table (coalesce on the record's number), measured three ways in one run:

    sink       an ``echo`` job's N records through a real control plane and agent, then
               delivered by the control plane's sink: insertMultiple batches of 200, 4 in
               flight, OAuth client credentials; timed from the delivery's start to its end
               (as the control plane records them)
    bare loop  aiohttp alone (the fastest client measured here, docs/choices.md) posting the
               same batches, already built, with the same batch size, concurrency and auth
    ceiling    wrk posting one 200-record batch over and over: the sandbox's own limit

Each run writes into fresh staging and target tables, so both sides always insert; runs
alternate (sink, bare, sink, bare ...).

    .venv/bin/python bench/servicenow_sink.py [--records 20000] [--runs 3]
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
from pathlib import Path

import aiohttp
import psutil
from _cluster import cluster
from bridgehead_testing.sandbox_server import SandboxServer

BATCH = 200
IN_FLIGHT = 4
PAD = 100


def sandbox_config(runs: int) -> str:
    lines = []
    for side in ("sink", "bare", "wrk"):
        for run in range(runs):
            lines += [
                f"[transforms.u_bench_{side}_{run}]",
                f'target = "u_bench_{side}_target_{run}"',
                'coalesce = ["u_number"]',
                f"[transforms.u_bench_{side}_{run}.fields]",
                'u_number = "u_n"',
                'u_pad = "u_pad"',
            ]
    return "\n".join(lines) + "\n"


def rows(count: int) -> list[dict[str, str]]:
    # What the sink makes of an echo record {"n": i, "pad": "x" * PAD} with the map below.
    return [{"u_n": str(i), "u_pad": "x" * PAD} for i in range(count)]


async def bare_loop(url: str, staging: str, records: list[dict[str, str]]) -> float:
    async with aiohttp.ClientSession() as session:
        form = {"grant_type": "client_credentials", "client_id": "bridgehead", "client_secret": "bridgehead"}
        async with session.post(url + "/oauth_token.do", data=form) as response:
            token = (await response.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"}
        bodies = [json.dumps({"records": records[i : i + BATCH]}).encode() for i in range(0, len(records), BATCH)]
        queue = iter(bodies)
        target = f"{url}/api/now/import/{staging}/insertMultiple"

        async def lane() -> None:
            for body in queue:
                async with session.post(target, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 201:
                        raise SystemExit(f"bare loop: HTTP {response.status}")

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))
        return time.perf_counter() - started


def wrk_ceiling(url: str, staging: str) -> float | None:
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk): no ceiling measured")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        body = json.dumps({"records": rows(BATCH)})
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ["BH_BENCH_SN_SECRET"] = "bridgehead"  # noqa: S105 - the sandbox's documented demo client
    with tempfile.TemporaryDirectory(prefix="bridgehead-bench-sn-") as tmp:
        sandbox = SandboxServer(Path(tmp) / "sandbox", sandbox_config(args.runs)).start()
        instance = (
            "\n[servicenow.bench]\n"
            f'url = "{sandbox.url}"\nclient_id = "bridgehead"\nclient_secret_env = "BH_BENCH_SN_SECRET"\n'
            f"tables = {json.dumps([f'u_bench_sink_{run}' for run in range(args.runs)])}\n"
            f"batch_size = {BATCH}\nmax_in_flight = {IN_FLIGHT}\nmax_requests_per_s = 10000\n"
        )
        try:
            with cluster(extra_config=instance) as (control, _agent):
                measure(control, sandbox, args)
        finally:
            sandbox.stop()


def measure(control: object, sandbox: SandboxServer, args: argparse.Namespace) -> None:
    api = control.api()  # type: ignore[attr-defined]
    records = rows(args.records)
    sink_rates: list[float] = []
    bare_rates: list[float] = []
    for run in range(args.runs):
        sink = {"servicenow": "bench", "import_set": f"u_bench_sink_{run}", "map": {"u_n": "n", "u_pad": "pad"}}
        job = api.submit("echo", {"count": args.records, "size": PAD}, sink=sink)
        api.wait_done(job["id"], timeout=300)
        cp_cpu, sb_cpu = cpu_seconds(control.proc.pid), cpu_seconds(sandbox.pid)  # type: ignore[attr-defined]
        while True:
            sync = api.job(job["id"])["sync"]
            if sync["state"] in ("done", "failed"):
                break
            time.sleep(0.05)
        if sync["state"] != "done" or sync["inserted"] != args.records:
            raise SystemExit(f"sink run failed: {sync}")
        sink_rate = args.records / (sync["finished_at"] - sync["started_at"])
        cp_used = cpu_seconds(control.proc.pid) - cp_cpu  # type: ignore[attr-defined]
        sb_used = cpu_seconds(sandbox.pid) - sb_cpu
        seconds = args.records / sink_rate
        bare_rate = args.records / asyncio.run(bare_loop(sandbox.url, f"u_bench_bare_{run}", records))
        sink_rates.append(sink_rate)
        bare_rates.append(bare_rate)
        print(
            f"run {run + 1}: sink {sink_rate:8,.0f} records/s, bare aiohttp loop {bare_rate:8,.0f} records/s "
            f"(during the sink: control plane {cp_used / seconds:.2f} core, sandbox {sb_used / seconds:.2f} core)"
        )
    ceiling = wrk_ceiling(sandbox.url, "u_bench_wrk_0")
    s, b = statistics.median(sink_rates), statistics.median(bare_rates)
    ratios = [x / y for x, y in zip(sink_rates, bare_rates, strict=True)]
    print(
        f"\nmedian: sink {s:,.0f} records/s, bare loop {b:,.0f} records/s: "
        f"{s / b:.2f}x (runs {min(ratios):.2f}-{max(ratios):.2f}; goal >= 0.9x)"
    )
    if ceiling is not None:
        print(f"sandbox ceiling (wrk, {IN_FLIGHT} connections, {BATCH}-record batches): {ceiling:,.0f} records/s")


if __name__ == "__main__":
    main()
