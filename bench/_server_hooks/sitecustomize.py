"""Loaded by the control plane bench/many_agents.py starts (its PYTHONPATH): it logs each
garbage collection that holds the interpreter for 20 ms or more, since a pause there stalls
every session's heartbeat answer at once. With BRIDGEHEAD_BENCH_GC_FREEZE_S (the bench's
``--server-gc-freeze-s``) it also calls ``gc.freeze()`` that often, to test whether the pauses
are what breaks the latency goal. Not a part of Bridgehead; only the bench sets it."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time

_THRESHOLD_S = 0.02
_started = 0.0


def _on_gc(phase: str, info: dict[str, int]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
        return
    took = time.perf_counter() - _started
    if took >= _THRESHOLD_S:
        print(
            f"{time.strftime('%H:%M:%S')} bench-gc: generation {info['generation']} pause {took * 1000:.0f} ms "
            f"({info['collected']} collected)",
            file=sys.stderr,
            flush=True,
        )


gc.callbacks.append(_on_gc)


def _freeze_every(interval_s: float) -> None:
    # An experiment, not a fix: frozen objects are never collected by the cycle collector,
    # so a session that ends after a freeze leaks whatever cycles it leaves.
    while True:
        time.sleep(interval_s)
        gc.freeze()


if os.environ.get("BRIDGEHEAD_BENCH_GC_FREEZE_S"):
    threading.Thread(
        target=_freeze_every, args=(float(os.environ["BRIDGEHEAD_BENCH_GC_FREEZE_S"]),), daemon=True
    ).start()
