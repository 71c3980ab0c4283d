"""Which event loop a Bridgehead process runs on: uvloop where it runs (not on Windows) and is
installed, else asyncio's own. The agent's round trip for a job, and the control plane's
relaying of it, are mostly event-loop and socket work, which uvloop does in C
(bench/ssh_latency.py's floor, docs/choices.md)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

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
