"""``RssSampler``: the peak resident memory of some processes (the agent, the control plane)
while a test or a bench streams through them, sampled every 0.2 s in a thread."""

from __future__ import annotations

import threading
from typing import Self

import psutil  # type: ignore[import-untyped]  # no stubs in the venv; the few calls here are checked by the tests that use them

MiB = 1024 * 1024


class RssSampler:
    """Use as ``with RssSampler({"agent": pid}) as rss: ...``, then read ``growth_mib()``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.start = {name: p.memory_info().rss for name, p in self.procs.items()}
        self.peak = dict(self.start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for name, proc in self.procs.items():
                try:
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
                except psutil.Error:  # it exited: its peak so far stands
                    pass

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def growth_mib(self) -> dict[str, float]:
        """How far each process grew above its size at the start, in MiB (one decimal)."""
        return {name: round((self.peak[name] - self.start[name]) / MiB, 1) for name in self.procs}

    def summary(self) -> str:
        """``agent 61 MiB (+12), control plane 80 MiB (+3)``: peaks and growth."""
        return ", ".join(
            f"{name} {self.peak[name] / MiB:.0f} MiB (+{(self.peak[name] - self.start[name]) / MiB:.0f})"
            for name in self.procs
        )
