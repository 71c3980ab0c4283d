"""Dispatch: no-op jobs per second end to end with one agent, and submit-to-done latency.

Each job is one ``POST /api/v1/jobs?wait=10`` of an ``echo`` job emitting one record: the
answer comes when the job has run on the agent and its record and completion are durable in
the control plane's store. ``wrk`` drives the load (a C client, so the load generator takes
little of this 2-core machine's CPU from the system under test); beside it, in the same run
and with the same client and connections, the raw cost of an HTTP call to the same server
(``GET /healthz``). Afterwards every job is checked: all succeeded, each with one record.

It measures the default (mutual TLS between agent and control plane, HTTPS for the API, and
power-loss-safe commits on both sides) against process-crash-only commits
(``synchronous = "normal"``), and against plain HTTP (``--insecure-http``), and prints the
ratios: durability (goal >= 0.9x) and TLS (goal >= 0.8x).

Each comparison runs both set-ups at once (one idles while the other is measured) and
alternates short bursts between them, ``--rounds`` of each, in ABBA order: on this shared
machine one long run of either drifts by 20-30 %, and short alternating bursts put both under
the same drift. Each figure is the median of its bursts.

    .venv/bin/python bench/dispatch.py [--seconds 4] [--connections 32] [--rounds 8]
                                       [--tls-only | --durability-only]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from _cluster import cluster
from bridgehead_testing.harness import ControlPlane

POST_LUA = """
wrk.method = "POST"
wrk.body = '{"plugin":"echo","params":{"records":[{"ok":true}]}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
done = function(summary, latency, requests)
  io.write(string.format("PCT %%.3f %%.3f %%.3f\\n", latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
  io.write(string.format("ERRORS %%d %%d\\n", summary.errors.status, summary.errors.timeout))
end
"""


def wrk(url: str, seconds: float, connections: int, script: Path | None) -> tuple[float, float, float, str]:
    cmd = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = re.search(r"PCT ([\d.]+) ([\d.]+)", out)
    if pct:
        return rate, float(pct.group(1)), float(pct.group(2)), out
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return (
        rate,
        float(p50.group(1)) * scale[p50.group(2)],  # type: ignore[union-attr]
        float(p99.group(1)) * scale[p99.group(2)],
        out,
    )  # type: ignore[union-attr]


Figures = dict[str, tuple[float, float, float, str]]


def measure(args: argparse.Namespace, tls: bool, synchronous: str = "full") -> Figures:
    """One control plane and agent (over mutual TLS, or plain HTTP on loopback), measured."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        cluster(max_concurrent_jobs=args.connections, tls=tls, synchronous=synchronous) as (control, _),
    ):
        token = control.token("operator")
        script = Path(tmp) / "post.lua"
        script.write_text(POST_LUA % token)
        url = control.url + "/api/v1/jobs?wait=10"
        wrk(url, 2, args.connections, script)  # warm-up
        figures = {
            "raw": wrk(control.url + "/healthz", args.seconds, args.connections, None),
            "jobs": wrk(url, args.seconds, args.connections, script),
            "serial": wrk(url, min(args.seconds, 5), 1, script),
            "serial_raw": wrk(control.url + "/healthz", min(args.seconds, 5), 1, None),
        }
        api = control.api()
        states: dict[str, int] = {}
        for state in ("queued", "running", "succeeded", "failed", "cancelled"):
            status, body = api.request("GET", f"/api/v1/jobs?state={state}&limit=1000")
            states[state] = len(body["jobs"])
        bad = {k: v for k, v in states.items() if k != "succeeded" and v}
    label = "mutual TLS" if tls else "plain HTTP (--insecure-http)"
    label += ", power-loss-safe commits" if synchronous == "full" else ", process-crash-only commits (normal)"
    raw, jobs, serial, serial_raw = (figures[k] for k in ("raw", "jobs", "serial", "serial_raw"))
    print(f"{label}: no-op echo jobs through one agent, wrk with {args.connections} connections")
    print(f"  raw HTTP (GET /healthz)   {raw[0]:8.0f} req/s   p50 {raw[1]:6.2f} ms  p99 {raw[2]:6.2f} ms")
    print(f"  jobs, submit to done      {jobs[0]:8.0f} jobs/s  p50 {jobs[1]:6.2f} ms  p99 {jobs[2]:6.2f} ms")
    print(
        f"  one at a time             {serial[0]:8.0f} jobs/s  p50 {serial[1]:6.2f} ms  p99 {serial[2]:6.2f} ms"
        f"   (raw HTTP p50 {serial_raw[1]:.2f} ms)"
    )
    print(f"  jobs/s against raw HTTP req/s: {jobs[0] / raw[0]:.2f}x;  goal >= 2,000 jobs/s and p50 <= 5 ms")
    print(f"  check: jobs not succeeded among the newest 1000 of each state: {bad or 'none'}")
    errors = re.search(r"ERRORS (\d+) (\d+)", jobs[3])
    if errors is not None and errors.group(0) != "ERRORS 0 0":  # a stall: wrk gives up after 2 s
        print(f"  check: wrk saw {errors.group(1)} answers other than 2xx and {errors.group(2)} timeouts")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4, help="one burst at 32 connections")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--tls-only", action="store_true", help="measure the default mode only")
    parser.add_argument("--durability-only", action="store_true", help="the default against normal commits only")
    parser.add_argument("--rounds", type=int, default=8, help="alternating bursts of each set-up")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk; scripts/test installs it)")
    if args.tls_only:
        measure(args, tls=True)
        return
    default = Setup("mutual TLS, power-loss-safe commits (the default)", tls=True, synchronous="full")
    unsafe = Setup("mutual TLS, process-crash-only commits (normal)", tls=True, synchronous="normal")
    compare(args, default, unsafe)
    title = "power-loss-safe commits (the default) against process-crash-only, same run (goal >= 0.9x)"
    ratios(title, default, unsafe, args)
    if args.durability_only:
        return
    default.bursts.clear()
    plain = Setup("plain HTTP (--insecure-http), power-loss-safe commits", tls=False, synchronous="full")
    compare(args, default, plain)
    ratios("TLS against plain HTTP, same run (goal >= 0.8x)", default, plain, args)


@dataclass
class Setup:
    label: str
    tls: bool
    synchronous: str
    bursts: list[Figures] = field(default_factory=list)

    def figures(self) -> Figures:
        return median(self.bursts)


def compare(args: argparse.Namespace, *setups: Setup) -> None:
    """Run the set-ups side by side and measure them in alternating bursts (ABBA...)."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        targets = []
        for index, setup in enumerate(setups):
            control, _ = stack.enter_context(
                cluster(max_concurrent_jobs=args.connections, tls=setup.tls, synchronous=setup.synchronous)
            )
            script = tmp / f"post{index}.lua"
            script.write_text(POST_LUA % control.token("operator"))
            wrk(control.url + "/api/v1/jobs?wait=10", 2, args.connections, script)  # warm-up
            targets.append((setup, control, script))
        for round_ in range(args.rounds):
            for setup, control, script in targets if round_ % 2 == 0 else reversed(targets):
                url = control.url + "/api/v1/jobs?wait=10"
                setup.bursts.append(
                    {
                        "raw": wrk(control.url + "/healthz", 1, args.connections, None),
                        "jobs": wrk(url, args.seconds, args.connections, script),
                        "serial": wrk(url, 1, 1, script),
                    }
                )
        for setup, control, _script in targets:
            report(setup, control, args)


def report(setup: Setup, control: ControlPlane, args: argparse.Namespace) -> None:
    api = control.api()
    bad = {}
    for state in ("queued", "running", "failed", "cancelled"):
        _status, body = api.request("GET", f"/api/v1/jobs?state={state}&limit=1000")
        if body["jobs"]:
            bad[state] = len(body["jobs"])
    figures = setup.figures()
    raw, jobs, serial = (figures[k] for k in ("raw", "jobs", "serial"))
    rates = " ".join(f"{b['jobs'][0]:.0f}" for b in setup.bursts)
    print(f"{setup.label}: no-op echo jobs through one agent, wrk with {args.connections} connections")
    print(f"  raw HTTP (GET /healthz)   {raw[0]:8.0f} req/s   p50 {raw[1]:6.2f} ms")
    print(f"  jobs, submit to done      {jobs[0]:8.0f} jobs/s  p50 {jobs[1]:6.2f} ms  p99 {jobs[2]:6.2f} ms")
    print(f"  one at a time             {serial[0]:8.0f} jobs/s  p50 {serial[1]:6.2f} ms  p99 {serial[2]:6.2f} ms")
    print(f"  bursts (jobs/s): {rates}")
    print(f"  jobs/s against raw HTTP req/s: {jobs[0] / raw[0]:.2f}x;  goal >= 2,000 jobs/s and p50 <= 5 ms")
    print(f"  check: jobs not succeeded: {bad or 'none'}")
    found = (re.search(r"ERRORS (\d+) (\d+)", b["jobs"][3]) for b in setup.bursts)
    errors = [m.groups() for m in found if m is not None and m.group(0) != "ERRORS 0 0"]
    if errors:  # a stall: wrk gives up after 2 s
        print(f"  check: wrk saw answers other than 2xx and timeouts: {errors}")


def median(runs: list[Figures]) -> Figures:
    """Per measurement, the median of each figure over the runs."""

    def mid(values: list[float]) -> float:
        return statistics.median(values)

    return {
        key: (mid([r[key][0] for r in runs]), mid([r[key][1] for r in runs]), mid([r[key][2] for r in runs]), "")
        for key in runs[0]
    }


def ratios(title: str, measured: Setup, against: Setup, args: argparse.Namespace) -> None:
    """Each a higher-is-better figure: rates as measured / against, p50s as against / measured;
    the ratio of medians, and the spread of the ratios of bursts measured next to each other."""
    mine, theirs = measured.figures(), against.figures()
    pairs = sorted(m["jobs"][0] / a["jobs"][0] for m, a in zip(measured.bursts, against.bursts, strict=True))
    print(title + ":")
    print(
        f"  jobs/s               {mine['jobs'][0] / theirs['jobs'][0]:.2f}x"
        f"   (bursts side by side: {pairs[0]:.2f}-{pairs[-1]:.2f}x, median {statistics.median(pairs):.2f}x)"
    )
    print(f"  p50 at {args.connections} connections   {theirs['jobs'][1] / mine['jobs'][1]:.2f}x")
    print(f"  one at a time, p50   {theirs['serial'][1] / mine['serial'][1]:.2f}x")


if __name__ == "__main__":
    main()
