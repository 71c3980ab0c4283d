"""SessionThread: one daemon thread per ODBC connection, running calls in order."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bridgehead.plugins.sql.session_thread import SessionThread

ROOT = Path(__file__).resolve().parents[2]


def test_calls_run_in_order_on_one_thread() -> None:
    thread = SessionThread("t")
    seen: list[tuple[int, int]] = []
    futures = [thread.submit(lambda i=i: seen.append((i, threading.get_ident()))) for i in range(50)]
    for future in futures:
        future.result(timeout=5)
    assert [i for i, _ in seen] == list(range(50))
    assert len({ident for _, ident in seen}) == 1
    assert seen[0][1] != threading.get_ident()
    thread.shutdown()
    assert not thread.alive


def test_an_exception_reaches_the_caller_and_the_thread_goes_on() -> None:
    thread = SessionThread("t")

    def boom() -> None:
        raise ValueError("driver said no")

    with pytest.raises(ValueError, match="driver said no"):
        thread.submit(boom).result(timeout=5)
    assert 3 == thread.submit(lambda: 3).result(timeout=5)
    thread.shutdown()


def test_shutdown_runs_what_was_submitted_then_refuses_more() -> None:
    thread = SessionThread("t")
    gate = threading.Event()
    first = thread.submit(gate.wait, 5)
    second = thread.submit(lambda: "closed")
    thread.shutdown(wait=False)
    with pytest.raises(RuntimeError, match="shut down"):
        thread.submit(lambda: None)
    gate.set()
    assert "closed" == second.result(timeout=5)
    assert first.result(timeout=5) is True


def test_cancel_futures_drops_calls_not_started() -> None:
    thread = SessionThread("t")
    gate, started = threading.Event(), threading.Event()

    def first() -> bool:
        started.set()
        return gate.wait(5)

    running = thread.submit(first)
    queued = thread.submit(lambda: "never")
    assert started.wait(5)
    thread.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert running.result(timeout=5) is True
    assert queued.cancelled()


def test_a_call_that_never_returns_does_not_hold_up_exit() -> None:
    """A stuck driver call parks its thread; the process still ends (run in a child)."""
    script = (
        "import threading\n"
        "from bridgehead.plugins.sql.session_thread import SessionThread\n"
        "t = SessionThread('stuck')\n"
        "t.submit(threading.Event().wait)\n"
        "t.shutdown(wait=False)\n"
        "print('leaving')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert (0, "leaving") == (done.returncode, done.stdout.strip()), done.stderr


async def test_usable_as_an_asyncio_executor() -> None:
    thread = SessionThread("t")
    loop = asyncio.get_running_loop()
    assert threading.get_ident() != await loop.run_in_executor(thread, threading.get_ident)
    thread.shutdown()
