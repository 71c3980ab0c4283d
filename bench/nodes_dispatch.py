"""Dispatch on SQLite and on PostgreSQL, one node and two: no-op jobs per second and p50.

Each job is one ``POST /api/v1/jobs?wait=10`` of an ``echo`` job emitting one record, driven
by ``wrk`` (as bench/dispatch.py). Measured in one run, side by side:

- one node on SQLite (the embedded default) with one agent;
- one node on PostgreSQL (the local server, a fresh database) with one agent;
- two nodes on one PostgreSQL database, an agent on each, one ``wrk`` per node at once
  (half the connections each); jobs/s is their sum, p50 their mean.

    .venv/bin/python bench/nodes_dispatch.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bridgehead_testing.harness import Agent, ControlPlane, wait_connected
from bridgehead_testing.nodes import IDENTITY_SECRET_ENV, copy_identity, fresh_database, node_store
from dispatch import POST_LUA, wrk


@contextmanager
def node(
    workdir: Path, name: str, store: str, copy_identity_from: ControlPlane | None = None
) -> Iterator[ControlPlane]:
    (workdir / name).mkdir()
    control = ControlPlane(workdir / name, extra_config=store)
    if copy_identity_from is not None:  # the files an admin copies to a new node
        copy_identity(copy_identity_from, control)
    control.start()
    try:
        yield control
    finally:
        control.stop()


@contextmanager
def agent_on(workdir: Path, control: ControlPlane, name: str, slots: int) -> Iterator[Agent]:
    agent = Agent(workdir, name, [control.url], max_concurrent_jobs=slots)
    agent.enroll(control.enrollment_token())
    agent.start()
    try:
        wait_connected(control.api(), [name])
        yield agent
    finally:
        agent.stop()


def load(controls: list[ControlPlane], seconds: float, connections: int, tmp: Path) -> tuple[float, float]:
    """Jobs/s (summed over the nodes) and p50 ms (their mean), one wrk per node at once."""
    results: list[tuple[float, float, float, str]] = []
    per_node = max(1, connections // len(controls))

    def drive(control: ControlPlane, i: int) -> None:
        script = tmp / f"post{i}.lua"
        script.write_text(POST_LUA % control.token("operator"))
        url = control.url + "/api/v1/jobs?wait=10"
        wrk(url, 2, per_node, script)  # warm-up
        results.append(wrk(url, seconds, per_node, script))

    threads = [threading.Thread(target=drive, args=(c, i)) for i, c in enumerate(controls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(r[0] for r in results), sum(r[1] for r in results) / len(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk; scripts/test installs it)")
    os.environ.setdefault(IDENTITY_SECRET_ENV, secrets.token_urlsafe(32))
    figures: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bridgehead-bench-") as tmp:
        work = Path(tmp)
        with node(work, "sqlite", "") as control, agent_on(work, control, "a-sqlite", args.connections):
            figures["SQLite, one node"] = load([control], args.seconds, args.connections, work)
        with fresh_database("bh_bench") as database:
            store = node_store(database)
            with node(work, "pg1", store) as control, agent_on(work, control, "a-pg1", args.connections):
                figures["PostgreSQL, one node"] = load([control], args.seconds, args.connections, work)
        with fresh_database("bh_bench") as database, ExitStack() as stack:
            store = node_store(database)
            first = stack.enter_context(node(work, "pg2a", store))
            second = stack.enter_context(node(work, "pg2b", store, copy_identity_from=first))
            half = max(1, args.connections // 2)
            stack.enter_context(agent_on(work, first, "a-pg2a", half))
            stack.enter_context(agent_on(work, second, "a-pg2b", half))
            figures["PostgreSQL, two nodes"] = load([first, second], args.seconds, args.connections, work)
    print(f"no-op echo jobs, submit to done, wrk with {args.connections} connections in all (2 cores here)")
    for label, (rate, p50) in figures.items():
        print(f"  {label:24} {rate:8.0f} jobs/s  p50 {p50:6.2f} ms")
    base = figures["SQLite, one node"][0]
    print(f"  PostgreSQL one node against SQLite: {figures['PostgreSQL, one node'][0] / base:.2f}x")
    print(
        f"  two nodes against one (PostgreSQL): "
        f"{figures['PostgreSQL, two nodes'][0] / figures['PostgreSQL, one node'][0]:.2f}x"
    )


if __name__ == "__main__":
    main()
