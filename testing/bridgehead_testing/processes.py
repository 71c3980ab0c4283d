"""Finding and ending processes that are not our children, through Linux's /proc: what sshd's
sessions leave behind (each in its own session, reparented away when its shell exits)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

from bridgehead_testing.harness import scaled


class SurvivedKill(RuntimeError):
    """Processes still listed in /proc well after SIGKILL."""


def live_processes() -> dict[int, int]:
    """pid -> parent pid of every process that is not a zombie."""
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses; the fields after it do not.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields and fields[0] != b"Z":
            out[int(entry.name)] = int(fields[1])
    return out


def descendants(root: int) -> set[int]:
    parents = live_processes()
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in found}
        found |= frontier
    return found


def ssh_connection_to(pid: int) -> tuple[str, int] | None:
    """(server address, port) from the process's SSH_CONNECTION, which sshd gives every session."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return None
    for var in environ.split(b"\0"):
        if var.startswith(b"SSH_CONNECTION="):
            parts = var.split(b"=", 1)[1].split()
            if len(parts) == 4 and parts[3].isdigit():
                return parts[2].decode(errors="replace"), int(parts[3])
    return None


def freeze_and_kill(find: Callable[[], set[int]]) -> set[int]:
    """SIGSTOP what ``find`` returns until it finds nothing new, then SIGKILL all of it and wait.

    Stopping first means that nothing forks its way out while the set is collected.
    """
    me = os.getpid()
    stopped: set[int] = set()
    for _ in range(100):
        new = find() - stopped - {me}
        if not new:
            break
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stopped |= new
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # SIGKILL is delivered asynchronously: a process may still show as running for a moment after
    # kill() returns. They are not our children, so there is no wait(); watch /proc instead.
    deadline = time.monotonic() + scaled(10)
    while stopped & set(live_processes()):
        if time.monotonic() > deadline:
            raise SurvivedKill(f"processes survived SIGKILL: {sorted(stopped & set(live_processes()))}")
        time.sleep(0.01)
    return stopped
