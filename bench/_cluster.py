"""A control plane and one agent as real processes, for the benchmarks."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bridgehead_testing.harness import Agent, ControlPlane, wait_connected


@contextmanager
def cluster(
    agent_extra: str = "", max_concurrent_jobs: int = 8, **server: object
) -> Iterator[tuple[ControlPlane, Agent]]:
    with tempfile.TemporaryDirectory(prefix="bridgehead-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "cp").mkdir()
        control = ControlPlane(workdir / "cp", **server).start()  # type: ignore[arg-type]
        agent = Agent(workdir, "bench-agent", [control.url], extra=agent_extra, max_concurrent_jobs=max_concurrent_jobs)
        try:
            agent.enroll(control.enrollment_token())
            agent.start()
            wait_connected(control.api(), ["bench-agent"])
            yield control, agent
        finally:
            agent.stop()
            control.stop()
