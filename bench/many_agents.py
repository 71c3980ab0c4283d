"""Many agents on one control plane: N real sessions from one load-generator process.

The bench starts a control plane on SQLite (as bench/_cluster.py does), enrols N identities
over the real HTTPS API (a fresh Ed25519 key and CSR each, one enrolment token with N uses),
and opens one websocket per identity over mutual TLS with its own client certificate: the
real challenge/hello (signed with ``Identity.sign_hello``)/welcome, heartbeats at the
welcome's ``heartbeat_s``, credit and no-op echo jobs answered like a real agent
(bench/_load_client.py). N ramps in steps; at each step, once the sessions are up and a
couple of heartbeat intervals have passed, it holds for ``--hold-s`` and measures:

    heartbeat answer latency  from sending a heartbeat to reading the control plane's answer:
                              over all sessions (includes the generator's own loop delay, shown
                              apart as lag_99), and over ``--probes`` sessions run from an idle
                              process of their own (bench/_probe.py): the goal is judged on those
    falsely lost              sessions the control plane closed or dropped, the connected count
                              of /healthz sampled each second, GET /api/v1/agents at the end of
                              the step, and warnings in the control plane's log
    RSS, CPU                  of the control plane's whole process (psutil), CPU per 1,000
                              agents; the generator's and the whole machine's CPU beside it
    GC pauses                 the control plane's collections of 20 ms or more, logged by
                              bench/_server_hooks/sitecustomize.py (on its PYTHONPATH)

Goals (issue 19, one node on SQLite, this 2-core machine): 10,000 connected agents in under
2 GB of RSS, heartbeat answer p99 under 100 ms, no agent falsely declared lost.

    .venv/bin/python bench/many_agents.py --keep-going         # 1,000 / 2,500 / 5,000 / 10,000
    .venv/bin/python bench/many_agents.py --max 2000 --step 500 --hold-s 20

The generator shares the CPU with the control plane: on two cores, its TLS handshakes and
its own framing of every heartbeat compete with the server's, so the server's latency figures
are pessimistic and its CPU share is what is left to it. Both are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from _load_client import LoadAgent, Stats, enroll_all
from bridgehead_testing.harness import ControlPlane

from bridgehead.agent.enroll import split_token
from bridgehead.agent.identity import Identity, pem_sha256

GOAL_RSS_MB = 2048
GC_PAUSE = re.compile(r"bench-gc: generation (\d) pause (\d+) ms")  # from _server_hooks/sitecustomize.py
GOAL_P99_MS = 100.0
DEFAULT_STEPS = [1000, 2500, 5000, 10_000]
# Lines of the control plane's log that mean an agent's session ended or was refused.
LOG_SIGNS = {
    "silent (4005)": re.compile(r"silent for .* dropping its session"),
    "ended": re.compile(r"agent connection .* ended"),
    "closed (protocol)": re.compile(r"closing agent connection"),
    "dropped": re.compile(r"dropping (the|agent) connection"),
    "too many handshakes": re.compile(r"too_many_handshakes|too many agent handshakes"),
    "error": re.compile(r"\b(ERROR|Traceback)\b"),
}


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit: one descriptor per session on each side. The
    control plane is started after this and inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    n: int
    enrol_s: float = 0.0
    ramp_s: float = 0.0
    connected_min: int = 0  # fewest connected agents /healthz reported during the hold
    listed_connected: int = 0  # GET /api/v1/agents at the end of the hold
    hb_p50_ms: float = 0.0
    hb_p99_ms: float = 0.0
    hb_max_ms: float = 0.0
    probe_p50_ms: float = 0.0  # the same, seen by the probe sessions' idle process
    probe_p99_ms: float = 0.0
    beats: int = 0
    unanswered: int = 0
    handshake_p99_ms: float = 0.0
    welcome_max_ms: float = 0.0  # hello sent to welcome read, the step's worst
    lag_p99_ms: float = 0.0  # the generator's own loop delay
    ramp_lag_max_ms: float = 0.0  # the same, its worst while the step's sessions opened
    server_rss_mb: float = 0.0
    server_cpu: float = 0.0  # cores, averaged over the hold
    gen_rss_mb: float = 0.0
    gen_cpu: float = 0.0
    machine_cpu: float = 0.0  # cores busy on the whole machine (other load included)
    gc_pauses: list[float] = field(default_factory=list)  # the control plane's, >= 20 ms (ms)
    gc_hold: dict[str, str] = field(default_factory=dict)  # per generation, in the hold: "count x max ms"
    jobs_done: int = 0
    jobs_submitted: int = 0
    session_ends: dict[str, int] = field(default_factory=dict)
    connect_failures: dict[str, int] = field(default_factory=dict)
    log_signs: dict[str, int] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        ends = sum(self.session_ends.values())
        return ends + max(0, self.n - self.connected_min) + self.log_signs.get("silent (4005)", 0)

    @property
    def holds(self) -> bool:
        return (
            self.connected_min == self.n
            and self.listed_connected == self.n
            and self.lost == 0
            and self.probe_p99_ms < GOAL_P99_MS
            and self.server_rss_mb < GOAL_RSS_MB
        )


class Bench:
    def __init__(self, args: argparse.Namespace, control: ControlPlane, workdir: Path) -> None:
        self.args = args
        self.control = control
        self.workdir = workdir
        assert control.proc is not None
        self.server = psutil.Process(control.proc.pid)
        self.me = psutil.Process()
        self.stats = Stats()
        self.identities: list[Identity] = []
        self.agents: list[LoadAgent] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.ws_url = control.url.replace("https://", "wss://") + "/api/v1/agent/connect"
        self.anchor = (control.data_dir / "tls" / "anchor.pem").read_bytes()
        token = control.enrollment_token("default", 3 * 3600, "--uses", str(args.max))
        self.secret, pin = split_token(token)
        if pem_sha256(self.anchor) != pin:
            raise SystemExit("the enrolment token does not pin this control plane's certificate")
        self.log_offset = 0
        self.gc_pauses: list[float] = []
        self.gc_generations: list[int] = []  # of each pause in gc_pauses
        self.gate = asyncio.Semaphore(args.connect_concurrency)
        self.probe: subprocess.Popen[str] | None = None
        self.pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="bench-io")
        self.probes = 0

    def start_probes(self) -> None:
        """``--probes`` sessions in a process of their own (bench/_probe.py), counted in N."""
        if not self.args.probes:
            return
        names = [f"probe-{i:03d}" for i in range(self.args.probes)]
        enroll_all(self.control.url, self.anchor, self.secret, names, "default", self.workdir)
        anchor = self.workdir / "anchor.pem"
        anchor.write_bytes(self.anchor)
        command = [sys.executable, str(Path(__file__).with_name("_probe.py")), self.ws_url, str(anchor)]
        self.probe = subprocess.Popen(
            [*command, *(str(self.workdir / name) for name in names)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.probes = len(names)

    def ask_probes(self, command: str) -> dict[str, Any]:
        if self.probe is None or self.probe.stdin is None or self.probe.stdout is None:
            return {"latency_s": [], "ends": 0, "connected": 0}
        self.probe.stdin.write(command + "\n")
        self.probe.stdin.flush()
        if command != "report":
            return {}
        return dict(json.loads(self.probe.stdout.readline()))

    # --- helpers ---------------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(  # noqa: S310 - the bench's own https:// control plane
            self.control.url + path, headers={"Authorization": f"Bearer {self.control.admin_token}"}
        )
        with urllib.request.urlopen(request, timeout=60, context=self.control.context) as response:  # noqa: S310
            return json.loads(response.read())

    def _listed_connected(self) -> int:
        connected, after = 0, ""
        while True:
            page = self._get(f"/api/v1/agents?limit=1000&after={after}")
            connected += sum(1 for agent in page if agent["connected"])
            if len(page) < 1000:
                return connected
            after = page[-1]["name"]

    def _scan_log(self) -> dict[str, int]:
        with open(self.control.log, "rb") as log:
            log.seek(self.log_offset)
            text = log.read().decode(errors="replace")
            self.log_offset = log.tell()
        found: dict[str, int] = {}
        found_pauses = GC_PAUSE.findall(text)
        self.gc_pauses = [float(ms) for _gen, ms in found_pauses]
        self.gc_generations = [int(gen) for gen, _ms in found_pauses]
        for line in text.splitlines():
            for sign, pattern in LOG_SIGNS.items():
                if pattern.search(line):
                    found[sign] = found.get(sign, 0) + 1
                    if len(self.examples) < 12:
                        self.examples.append(line[:240])
        return found

    examples: list[str] = []

    def _submit_jobs(self, stop: threading.Event, submitted: list[int]) -> None:
        """Echo jobs at ``--jobs-per-s`` (a thread: urllib blocks)."""
        interval = 1.0 / self.args.jobs_per_s
        body = json.dumps({"plugin": "echo", "params": {"count": 1}}).encode()
        next_at = time.monotonic()
        while not stop.is_set():
            request = urllib.request.Request(  # noqa: S310 - the bench's own https:// control plane
                self.control.url + "/api/v1/jobs",
                data=body,
                method="POST",
                headers={"Authorization": f"Bearer {self.control.admin_token}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30, context=self.control.context):  # noqa: S310
                    submitted[0] += 1
            except OSError:
                pass
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))

    async def _lag(self, out: list[float], stop: asyncio.Event) -> None:
        """The generator's own event-loop delay: how late a 100 ms sleep wakes up."""
        while not stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.1)
            out.append(time.perf_counter() - start - 0.1)

    # --- one step --------------------------------------------------------------------------

    async def step(self, n: int) -> Row:
        row = Row(n=n)
        loop = asyncio.get_running_loop()
        # Whatever ends in the step counts, ramp included; latency counts in the hold only.
        ends0 = dict(self.stats.session_ends)
        failures0 = dict(self.stats.connect_failures)
        ramp_lag: list[float] = []
        stop_lag = asyncio.Event()
        lag_task = asyncio.create_task(self._lag(ramp_lag, stop_lag))
        new = [f"load-{i:05d}" for i in range(len(self.identities), n - self.probes)]
        started = time.perf_counter()
        workers = self.args.enroll_workers
        chunks = [new[i::workers] for i in range(workers)]
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            batches = await asyncio.gather(
                *(
                    loop.run_in_executor(
                        pool, enroll_all, self.control.url, self.anchor, self.secret, chunk, "default", self.workdir
                    )
                    for chunk in chunks
                    if chunk
                )
            )
        row.enrol_s = time.perf_counter() - started
        fresh = [identity for batch in batches for identity in batch]
        self.identities += fresh

        started = time.perf_counter()
        agents = [LoadAgent(identity, self.ws_url, self.stats) for identity in fresh]
        # TLS contexts (a CA and a key pair loaded each) made off the loop that runs the sessions.
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            await asyncio.gather(
                *(
                    loop.run_in_executor(pool, lambda part: [a.tls() for a in part], agents[i::workers])
                    for i in range(workers)
                )
            )
        for agent in agents:
            self.agents.append(agent)
            self.tasks.append(asyncio.create_task(agent.run(self.gate)))
        deadline = time.monotonic() + self.args.ramp_timeout_s
        while sum(a.connected for a in self.agents) < n - self.probes and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        row.ramp_s = time.perf_counter() - started
        row.handshake_p99_ms = pct(self.stats.handshake_s[-len(fresh) :], 0.99) * 1000 if fresh else 0.0
        row.welcome_max_ms = max(self.stats.welcome_s[-len(fresh) :], default=0.0) * 1000
        # Settle: every session past its first heartbeats, the handshake burst's garbage gone.
        await asyncio.sleep(self.args.settle_s)
        # The generator's sessions are long-lived: out of its collector's sight, so that its own
        # full collections (seconds, at 10k sessions) do not pass for the server's latency.
        gc.collect()
        gc.freeze()

        # Hold: the window every figure below comes from.
        self.stats.beat_latency_s.clear()
        await self._blocking(self.ask_probes, "reset")
        unanswered0 = self.stats.beats_unanswered
        completed0 = self.stats.completed
        ramp_signs, ramp_gc = self._scan_log(), self.gc_pauses
        row.ramp_lag_max_ms = max(ramp_lag, default=0.0) * 1000
        lag: list[float] = []
        stop_lag.set()
        await lag_task
        stop_lag = asyncio.Event()
        lag_task = asyncio.create_task(self._lag(lag, stop_lag))
        stop_jobs, submitted = threading.Event(), [0]
        jobs = threading.Thread(target=self._submit_jobs, args=(stop_jobs, submitted), daemon=True)
        if self.args.jobs_per_s > 0:
            jobs.start()
        psutil.cpu_percent()  # starts the machine-wide window
        server0, me0, t0 = self.server.cpu_times(), self.me.cpu_times(), time.perf_counter()
        connected_min, rss_max = n, 0
        end = time.monotonic() + self.args.hold_s
        while time.monotonic() < end:
            await asyncio.sleep(1.0)
            health = await self._blocking(self._get, "/healthz")
            connected_min = min(connected_min, int(health["agents_connected"]))
            rss_max = max(rss_max, self.server.memory_info().rss)
        server1, me1, t1 = self.server.cpu_times(), self.me.cpu_times(), time.perf_counter()
        row.machine_cpu = psutil.cpu_percent() / 100 * psutil.cpu_count()
        stop_jobs.set()
        stop_lag.set()
        await lag_task
        probe = await self._blocking(self.ask_probes, "report")
        row.listed_connected = await self._blocking(self._listed_connected)
        if jobs.is_alive():
            await self._blocking(jobs.join)

        beats = self.stats.beat_latency_s
        row.beats = len(beats)
        row.hb_p50_ms = statistics.median(beats) * 1000 if beats else float("nan")
        row.hb_p99_ms = pct(beats, 0.99) * 1000
        row.hb_max_ms = max(beats) * 1000 if beats else float("nan")
        probed = probe["latency_s"]
        row.probe_p50_ms = statistics.median(probed) * 1000 if probed else float("nan")
        row.probe_p99_ms = pct(probed, 0.99) * 1000
        if probe["ends"]:
            row.session_ends["probe sessions ended (all time)"] = probe["ends"]
        row.unanswered = self.stats.beats_unanswered - unanswered0
        row.lag_p99_ms = pct(lag, 0.99) * 1000
        row.connected_min = connected_min
        row.server_rss_mb = rss_max / 2**20
        row.server_cpu = (sum(server1[:2]) - sum(server0[:2])) / (t1 - t0)
        row.gen_rss_mb = self.me.memory_info().rss / 2**20
        row.gen_cpu = (sum(me1[:2]) - sum(me0[:2])) / (t1 - t0)
        row.jobs_submitted = submitted[0]
        row.jobs_done = self.stats.completed - completed0
        row.session_ends = _delta(self.stats.session_ends, ends0)
        row.connect_failures = _delta(self.stats.connect_failures, failures0)
        hold_signs = self._scan_log()
        row.log_signs = {k: ramp_signs.get(k, 0) + hold_signs.get(k, 0) for k in {*ramp_signs, *hold_signs}}
        row.gc_pauses = ramp_gc + self.gc_pauses
        for generation in sorted(set(self.gc_generations)):
            pauses = [ms for gen, ms in zip(self.gc_generations, self.gc_pauses, strict=True) if gen == generation]
            row.gc_hold[f"gen{generation}"] = f"{len(pauses)} x max {max(pauses):.0f} ms"
        return row

    async def _blocking(self, call: Any, *args: Any) -> Any:
        # Our own pool, not the loop's default one: asyncio.run waits for that one to drain,
        # with no timeout, when the bench ends.
        return await asyncio.get_running_loop().run_in_executor(self.pool, call, *args)

    async def stop(self) -> None:
        """Close the sessions, bounded: 10,000 closing handshakes must not hold the exit."""
        if self.probe is not None:
            with contextlib.suppress(OSError, ValueError):
                self.ask_probes("quit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.probe.wait(10)
            self.probe.kill()
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=20)
        self.pool.shutdown(wait=False, cancel_futures=True)


def _delta(now: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in now.items() if v - before.get(k, 0)}


def print_row(row: Row) -> None:
    per_k = row.n / 1000
    print(
        f"{row.n:>6} {row.enrol_s:>7.1f} {row.ramp_s:>6.1f} {row.connected_min:>6} {row.listed_connected:>6}"
        f" {row.hb_p50_ms:>6.1f} {row.hb_p99_ms:>7.1f} {row.hb_max_ms:>7.0f} {row.lag_p99_ms:>6.1f}"
        f" {row.probe_p50_ms:>6.1f} {row.probe_p99_ms:>7.1f}"
        f" {row.server_rss_mb:>7.0f} {row.server_cpu * 100:>6.0f}% {row.server_cpu * 100 / per_k:>6.1f}%"
        f" {row.gen_cpu * 100:>5.0f}% {row.machine_cpu * 100:>5.0f}% {row.jobs_done:>5}/{row.jobs_submitted:<5}"
        f" {row.lost:>4}  {'yes' if row.holds else 'NO'}",
        flush=True,
    )
    detail = {
        "beats": row.beats,
        "unanswered": row.unanswered,
        "handshake_p99_ms": round(row.handshake_p99_ms, 1),
        "hello_to_welcome_max_ms": round(row.welcome_max_ms),
        "generator_ramp_lag_max_ms": round(row.ramp_lag_max_ms),
        "generator_rss_mb": round(row.gen_rss_mb),
        "server_gc_pauses_over_20ms": len(row.gc_pauses),
        "server_gc_max_ms": max(row.gc_pauses, default=0),
        "server_gc_pauses_in_hold": row.gc_hold,
    }
    for name in ("session_ends", "connect_failures", "log_signs"):
        if getattr(row, name):
            detail[name] = getattr(row, name)
    print(f"       {json.dumps(detail)}", flush=True)


HEADER = (
    "     N  enrol_s ramp_s  conn  listed hb_p50  hb_p99  hb_max lag_99 pr_p50  pr_p99  srv_MB srv_cpu  /1000"
    "  gen  machine  jobs       lost holds"
)


async def run(args: argparse.Namespace, control: ControlPlane, workdir: Path, steps: list[int]) -> list[Row]:
    bench = Bench(args, control, workdir)
    bench.start_probes()
    rows: list[Row] = []
    deadline = time.monotonic() + args.time_limit_s
    print(HEADER, flush=True)
    try:
        for n in steps:
            if time.monotonic() > deadline:
                print(f"time limit ({args.time_limit_s:g} s) reached: stopping before N={n}")
                break
            row = await bench.step(n)
            rows.append(row)
            print_row(row)
            if not row.holds and not args.keep_going:
                print("goals missed: no larger step (--keep-going to go on)")
                break
            if control.proc is not None and control.proc.poll() is not None:
                print("the control plane exited")
                break
    finally:
        await bench.stop()
    if Bench.examples:
        print("\ncontrol plane log, first lines about sessions ending:")
        for line in Bench.examples:
            print(f"  {line}")
    held = [row.n for row in rows if row.holds]
    print(
        f"\ngoals: {GOAL_RSS_MB} MB RSS, heartbeat p99 (probes) < {GOAL_P99_MS:g} ms, none lost; "
        f"largest N that holds: {max(held) if held else 'none'}",
        flush=True,
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max", type=int, default=DEFAULT_STEPS[-1], help="the most agents (default 10000)")
    parser.add_argument("--step", type=int, default=0, help="ramp in steps of this many (default 1k/2.5k/5k/10k)")
    parser.add_argument("--hold-s", type=float, default=60.0, help="measured window at each step")
    parser.add_argument("--settle-s", type=float, default=12.0, help="wait after the ramp before measuring")
    parser.add_argument("--ramp-timeout-s", type=float, default=300.0)
    parser.add_argument("--connect-concurrency", type=int, default=64, help="handshakes in flight while ramping")
    parser.add_argument("--enroll-workers", type=int, default=8)
    parser.add_argument("--probes", type=int, default=20, help="sessions measured from an idle process of their own")
    parser.add_argument("--jobs-per-s", type=float, default=10.0, help="no-op echo jobs submitted during holds")
    parser.add_argument("--heartbeat-s", type=float, default=5.0, help="the control plane's server.heartbeat_s")
    parser.add_argument(
        "--server-gc-freeze-s", type=float, default=0.0, help="experiment: gc.freeze() in the server this often"
    )
    parser.add_argument("--keep-going", action="store_true", help="ramp on past a step that misses the goals")
    parser.add_argument("--time-limit-s", type=float, default=1800.0, help="no new step after this")
    args = parser.parse_args()

    soft, hard = raise_nofile()
    steps = (
        list(range(args.step, args.max + 1, args.step))
        if args.step
        else [n for n in DEFAULT_STEPS if n < args.max] + [args.max]
    )
    # Each session holds a descriptor on both sides; keep room for files, sockets and SQLite.
    if args.max > soft - 200:
        raise SystemExit(f"--max {args.max} needs more descriptors than RLIMIT_NOFILE allows ({soft}/{hard})")
    print(f"many-agents bench: steps {steps}, hold {args.hold_s:g} s, RLIMIT_NOFILE {soft} (hard {hard})")
    print(f"machine: {psutil.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in psutil.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bridgehead-many-") as tmp:
        workdir = Path(tmp)
        (workdir / "cp").mkdir()
        control = ControlPlane(workdir / "cp", heartbeat_s=args.heartbeat_s)
        # The server's GC pauses reach its log (bench/_server_hooks/sitecustomize.py).
        hooks = str(Path(__file__).with_name("_server_hooks"))
        control.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [hooks, os.environ.get("PYTHONPATH")]))}
        if args.server_gc_freeze_s:
            control.env["BRIDGEHEAD_BENCH_GC_FREEZE_S"] = str(args.server_gc_freeze_s)
        control.start()
        try:
            asyncio.run(run(args, control, workdir / "agents", steps))
        finally:
            control.stop()
    sys.stdout.flush()
    # Skips tearing down thousands of TLS objects one by one: everything is closed already.
    os._exit(0)


if __name__ == "__main__":
    main()
