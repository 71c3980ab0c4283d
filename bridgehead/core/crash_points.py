"""Crash points: named places where a test can have the process kill itself, to prove what
survives a crash at that very moment (the failpoints of FoundationDB, etcd's gofail, TiKV's
fail-rs, reduced to the one action our invariants need).

``BRIDGEHEAD_CRASH_AT="agent.after_accept_sent"`` (or ``NAME:N``, the Nth time it is reached)
makes the process send itself SIGKILL there: no ``finally``, no atexit, no flush, exactly
what ``kill -9`` or an OOM kill does. Unset (always, in production) a crash point costs one
comparison of a module constant. The variable is read once, at import: whoever can set a
service's environment can already stop it.
"""

from __future__ import annotations

import os
import signal
import sys

_NAME, _, _COUNT = os.environ.get("BRIDGEHEAD_CRASH_AT", "").partition(":")
_remaining = int(_COUNT) if _COUNT.isdigit() else 1


def armed(name: str) -> bool:
    """Whether ``crash_point(name)`` may fire: lets a caller skip work that only decides
    whether to reach it."""
    return name == _NAME


def crash_point(name: str) -> None:
    """Kill this process here if the environment asked for a crash at ``name``."""
    global _remaining
    if not _NAME or name != _NAME:
        return
    _remaining -= 1
    if _remaining > 0:
        return
    print(f"crash point {name}: killing this process", file=sys.stderr, flush=True)
    if sys.platform == "win32":  # no SIGKILL; TerminateProcess is as abrupt
        os._exit(137)
    os.kill(os.getpid(), signal.SIGKILL)
