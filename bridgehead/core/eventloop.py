"""Which event loop a Bridgehead process runs on: uvloop where it runs (not on Windows) and is
installed, else asyncio's own. The agent's round trip for a job, and the control plane's
relaying of it, are mostly event-loop and socket work, which uvloop does in C
(bench/ssh_latency.py's floor, docs/choices.md)."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory() -> LoopFactory | None:
    """uvloop's ``new_event_loop``, or None for asyncio's default loop (the Proactor loop on
    Windows, where uvloop does not run)."""
    if sys.platform == "win32":
        return None
    try:
        import uvloop  # noqa: PLC0415 - imported only where it can run
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_apart(make: Callable[[], Coroutine[Any, Any, T]], name: str) -> T:
    """Run the coroutine ``make()`` to its end on a loop of its own, in a worker thread named
    ``name``, and return its result (or raise its error here). For synchronous code whose
    caller may be a running loop's thread (an async test, a CLI command): that loop must not
    be re-entered, and ``asyncio.run`` there would refuse."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(asyncio.run(make()))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
