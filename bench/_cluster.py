"""A control plane and one agent as real processes, for the benchmarks."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bridgehead_testing.harness import Agent, Api, ControlPlane, wait_connected


@contextmanager
def cluster(
    agent_extra: str = "", max_concurrent_jobs: int = 8, synchronous: str = "full", **server: object
) -> Iterator[tuple[ControlPlane, Agent]]:
    """A control plane and one enrolled, connected agent. ``synchronous``: both sides'
    durability setting (``full``, the default: power-loss safe; ``normal``: process-crash safe)."""
    with tempfile.TemporaryDirectory(prefix="bridgehead-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "cp").mkdir()
        store = f'[store]\nsynchronous = "{synchronous}"\n'
        control = ControlPlane(workdir / "cp", extra_config=store, **server).start()  # type: ignore[arg-type]
        agent = Agent(
            workdir,
            "bench-agent",
            [control.url],
            extra=agent_extra,
            max_concurrent_jobs=max_concurrent_jobs,
            options={"synchronous": synchronous},
        )
        try:
            agent.enroll(control.enrollment_token())
            agent.start()
            wait_connected(control.api(), ["bench-agent"])
            yield control, agent
        finally:
            agent.stop()
            control.stop()


def timed_relay_job(api: Api, plugin: str, params: dict[str, Any], expected: int, unit: str) -> float:
    """Seconds from submitting one job to its end, once it is known to have delivered exactly
    ``expected`` records (``unit`` names them in the message otherwise)."""
    start = time.perf_counter()
    job = api.submit(plugin, params, timeout_s=3600)
    done = api.wait_done(job["id"], timeout=3600)
    elapsed = time.perf_counter() - start
    if done["state"] != "succeeded" or done.get("record_count", 0) != expected:
        raise SystemExit(f"relay job did not deliver {expected} {unit}: {done}")
    return elapsed
