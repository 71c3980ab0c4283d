"""Surviving PostgreSQL going away (a restart, an outage, a failover to a replica) without a
human: docs/operations.md, "When PostgreSQL goes away".

A node keeps its hot state in memory and writes every transition to the store before it tells
anyone (``dispatch.durability``). When a store write fails, memory and store may disagree, so
the node stops at once (the dispatcher's ``fail_stop``): nothing more is acknowledged. On
SQLite the process then exits (70) and a supervisor starts it again. On PostgreSQL the
failure is the database's, usually passing, so the node does what a supervisor would, itself:

1. ``restart_or_exit`` shuts its network sockets down (agents and API clients see the node go
   at once, back off and try their other URLs instead of waiting on a node that answers
   nothing),
2. waits until PostgreSQL answers again and accepts writes (``wait_for_database``: one log
   line per attempt, capped jittered backoff, a systemd STATUS line and watchdog pings),
3. re-executes its own command line (``os.execv``: same pid, same arguments and environment),
   and the new image rebuilds its state from the store, as every start does.

At start, ``open_waiting`` does step 2 when the store cannot be opened, so a node started
before its database (a host's boot, a cluster's restart) comes up once the database does.

``--database-wait SECONDS`` bounds both waits (0: give up at once, as before); by default they
never end but by SIGTERM or Ctrl-C. The reasons for that default are in the operations guide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import NoReturn, TypeVar

from bridgehead.control.config import StoreSection
from bridgehead.core.errors import BridgeheadError
from bridgehead.core.sdnotify import Notifier

log = logging.getLogger("bridgehead.control.recovery")

T = TypeVar("T")

FAIL_STOP_EXIT = 70  # EX_SOFTWARE: what a fail-stop exits with where it does not recover
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 5.0
PROBE_TIMEOUT_S = 5.0


class DatabaseWaitOver(BridgeheadError):
    """``--database-wait`` ran out at start with PostgreSQL still away (exit code 1, as an
    unreachable database at start always was)."""


class Backoff:
    """Doubling delays up to ``cap_s``, each drawn from its upper half: nodes that lost the
    same database do not all knock at once, and none knocks much sooner than planned."""

    def __init__(self, first_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self._ceiling = first_s
        self._cap = cap_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def next(self) -> float:
        delay = self._rng.uniform(self._ceiling / 2, self._ceiling)
        self._ceiling = min(self._cap, self._ceiling * 2)
        return delay


@dataclass
class Plan:
    """What ``serve`` arms this module with (``arm``); None before: not a PostgreSQL node."""

    store: StoreSection
    wait_s: float | None  # None: for ever


_plan: Plan | None = None
_recovering = threading.Lock()


def arm(store: StoreSection, wait_s: float | None) -> None:
    """Make later store failures recover rather than exit (PostgreSQL only)."""
    global _plan
    _plan = Plan(store, wait_s) if store.backend == "postgresql" else None


def display_url(url: str) -> str:
    from bridgehead.control.store.postgres.store import display_url as shown  # asyncpg only where used

    return shown(url)


# --- is PostgreSQL there? -------------------------------------------------------------------


def probe(store: StoreSection) -> str:
    """'' if the database answers and takes writes; otherwise why not, in a line."""
    import asyncpg  # only PostgreSQL nodes get here

    async def ask() -> str:
        conn = await asyncpg.connect(store.database, password=store.password(), timeout=PROBE_TIMEOUT_S)
        try:
            standby = await conn.fetchval("SELECT pg_is_in_recovery()", timeout=PROBE_TIMEOUT_S)
        finally:
            await conn.close(timeout=PROBE_TIMEOUT_S)
        # A standby answers but refuses writes: wait for the failover to promote one.
        return "it answers, but as a read-only standby" if standby else ""

    outcome: list[str] = []

    def run() -> None:
        # A loop of its own in a thread: the caller may be on a running (now blocked) loop.
        try:
            outcome.append(asyncio.run(ask()))
        except Exception as exc:  # noqa: BLE001 - whatever it is, the database is not usable yet
            outcome.append(f"{type(exc).__name__}: {exc}".strip())

    thread = threading.Thread(target=run, name="bridgehead-database-probe", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S * 3)
    return outcome[0] if outcome else "no answer"


def wait_for_database(
    store: StoreSection,
    wait_s: float | None,
    why: str,
    stopping: Callable[[], bool] = lambda: False,
    notifier: Notifier | None = None,
) -> bool:
    """Wait until ``probe`` passes; True then, False if ``wait_s`` ran out or ``stopping()``.
    One log line per attempt; under systemd, the STATUS line says the same and the watchdog
    is kept (the node is doing what it should: waiting)."""
    notify = notifier or Notifier.from_environment()
    url = display_url(store.database)
    deadline = None if wait_s is None else time.monotonic() + wait_s
    backoff = Backoff(FIRST_DELAY_S, MAX_DELAY_S)
    attempt = 0
    while not stopping():
        attempt += 1
        problem = probe(store)
        if not problem:
            log.warning("PostgreSQL at %s answers again (attempt %d)", url, attempt)
            return True
        delay = backoff.next()
        if deadline is not None and time.monotonic() + delay > deadline:
            log.error("PostgreSQL at %s: %s (attempt %d); --database-wait is over", url, problem, attempt)
            return False
        log.warning(
            "PostgreSQL at %s is not usable (%s; attempt %d, %s): next try in %.1f s",
            url,
            problem,
            attempt,
            why,
            delay,
        )
        notify.status(f"waiting for PostgreSQL at {url} (attempt {attempt}): {problem}")
        notify.watchdog()
        _sleep(delay, stopping, notify)
    return False


def _sleep(seconds: float, stopping: Callable[[], bool], notify: Notifier) -> None:
    """Sleep in slices, so a stop request or a watchdog ping is never more than 1 s away."""
    end = time.monotonic() + seconds
    while not stopping():
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 1.0))
        notify.watchdog()


# --- at start -------------------------------------------------------------------------------


def open_waiting(open_store: Callable[[], T], store: StoreSection, wait_s: float | None) -> T:
    """``open_store()``, retried while PostgreSQL cannot be reached (``wait_s``: for how long;
    None: until it can, or SIGTERM). On SQLite, or for any other failure, it just calls it."""
    if store.backend != "postgresql":
        return open_store()
    deadline = None if wait_s is None else time.monotonic() + wait_s
    while True:
        try:
            return open_store()
        except Exception as exc:
            if not unreachable(exc) or wait_s == 0:
                raise
            log.warning("cannot open the store: %s", exc)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not wait_for_database(store, left, "starting"):
                raise DatabaseWaitOver(f"{exc} (gave up after --database-wait {wait_s} s)") from exc


def unreachable(exc: BaseException) -> bool:
    """Whether an error opening the store is the database being away (worth waiting for),
    rather than a configuration to fix (a wrong password or database name: exit and say so)."""
    import asyncpg

    from bridgehead.control.store.postgres.store import DatabaseUnreachable

    cause = exc.__cause__ if isinstance(exc, DatabaseUnreachable) else exc
    if isinstance(cause, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidCatalogNameError):
        return False  # no such role or database, or a wrong password
    return isinstance(exc, DatabaseUnreachable) or isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.PostgresConnectionError  # lost, or refused
        | asyncpg.OperatorInterventionError  # starting up, shutting down
        | asyncpg.InterfaceError  # a connection closed under a query
        | asyncpg.TooManyConnectionsError
        | asyncpg.ReadOnlySQLTransactionError,  # migrating on a standby, before its promotion
    )


# --- after a store failure ------------------------------------------------------------------


def restart_or_exit() -> NoReturn:
    """The end of a fail-stop; never returns. On PostgreSQL (``arm``): wait for the database,
    then re-execute this command; otherwise, or when ``--database-wait`` runs out, exit 70."""
    plan = _plan
    if plan is None or plan.wait_s == 0:
        _exit(FAIL_STOP_EXIT)
    if not _recovering.acquire(blocking=False):
        # Another thread is already at it (the re-exec ends this one too).
        while True:
            time.sleep(60)
    _shut_network_sockets()
    stop = _StopRequest()
    recovered = wait_for_database(plan.store, plan.wait_s, "after a failed write", stop.requested)
    if stop.signum is not None:
        log.warning("stopped (signal %d) while waiting for PostgreSQL: nothing to drain", stop.signum)
        logging.shutdown()
        signal.signal(stop.signum, signal.SIG_DFL)
        os.kill(os.getpid(), stop.signum)  # dies of it, as a supervisor expects
        _exit(128 + stop.signum)
    if not recovered:
        _exit(FAIL_STOP_EXIT)
    argv = list(getattr(sys, "orig_argv", []) or [sys.executable, *sys.argv])
    log.warning("restarting (exec %s) to rebuild this node's state from the store", " ".join(argv[:4]) + " ...")
    logging.shutdown()
    _close_inherited()
    os.execv(sys.executable, argv)  # noqa: S606 - this very command again, as it was started


def _exit(code: int) -> NoReturn:
    logging.shutdown()
    os._exit(code)


class _StopRequest:
    """SIGTERM and SIGINT while the wait blocks the event loop (whose own handlers would never
    run): remembered, and the wait ends."""

    def __init__(self) -> None:
        self.signum: int | None = None
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum

    def requested(self) -> bool:
        return self.signum is not None


def _open_fds() -> list[int]:
    try:
        return sorted(int(name) for name in os.listdir("/proc/self/fd") if int(name) > 2)
    except OSError:  # no /proc: nothing closed here, execv still drops what is close-on-exec
        return []


def _shut_network_sockets() -> None:
    """Shut down every TCP socket: the listening one (new connections are refused, those in
    its backlog reset, and its port is free for the new image), the agents' and API clients'
    (they see the node go now, not a heartbeat later) and the dead database connections. Shut
    down, not closed: their descriptors stay taken until the exec, so no object of the blocked
    event loop can close a descriptor the wait has opened since. Unix sockets stay (systemd's)."""
    for fd in _open_fds():
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue  # not a socket
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        sock.detach()


def _close_inherited() -> None:
    """Close what the exec would keep (the listening socket is made inheritable for the
    server's workers): the new image must not inherit descriptors it knows nothing of."""
    for fd in _open_fds():
        with contextlib.suppress(OSError):
            if os.get_inheritable(fd):
                os.close(fd)
