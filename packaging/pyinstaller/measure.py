"""The built agent's figures, printed by ``scripts/build-agent``: size on disk, ``--version``
start-up time, and idle memory once enrolled and connected to a real control plane.

    .venv/bin/python packaging/pyinstaller/measure.py dist/bridgehead-agent
    .venv-build/bin/python packaging/pyinstaller/measure.py dist/bridgehead-agent --no-rss

The idle memory needs a control plane, so the project's development virtualenv (``.venv``,
with ``bridgehead_testing``); ``--no-rss`` skips it where there is none.

A one-file binary runs as two processes: the bootloader, which unpacks the bundle into a
temporary directory and waits, and its child, the agent's Python. Both are reported, and
their sum as the honest figure; RSS counts the pages both map from the same files twice,
so PSS (each shared page divided among its users) is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1024 * 1024
SIZE_GOAL_MB = 40
VERSION_GOAL_S = 1.0
RSS_GOAL_MB = 50
VERSION_RUNS = 5
# After the agent is connected: long enough for the session's first heartbeats and for the
# agent to have settled into idling, which is the state measured.
SETTLE_S = 3.0


def verdict(ok: bool) -> str:
    return "ok" if ok else "OVER THE GOAL"


def version_seconds(binary: Path) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system, the bootloader's and the agent's) of one
    ``--version``. The CPU time says what the run costs on a machine that is busy elsewhere."""
    before, start = os.times(), time.perf_counter()
    subprocess.run([str(binary), "--version"], check=True, capture_output=True)  # noqa: S603 - our own build
    wall, after = time.perf_counter() - start, os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def status_kb(pid: int, field: str) -> int:
    """A ``kB`` figure of ``/proc/PID/status`` (``VmRSS``) or ``smaps_rollup`` (``Pss``)."""
    source = "smaps_rollup" if field == "Pss" else "status"
    for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/{source}")


def children(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(child) for child in (task / "children").read_text().split()]
    return pids


def idle_memory(binary: Path) -> str:
    from bridgehead_testing.harness import Agent, ControlPlane, wait_connected

    os.environ["BRIDGEHEAD_AGENT_BIN"] = str(binary.resolve())
    with tempfile.TemporaryDirectory(prefix="bridgehead-measure-") as tmp:
        workdir = Path(tmp)
        (workdir / "cp").mkdir()
        control = ControlPlane(workdir / "cp").start()
        agent = Agent(workdir, "measured-agent", [control.url])
        try:
            agent.enroll(control.enrollment_token())
            agent.start()
            wait_connected(control.api(), ["measured-agent"])
            time.sleep(SETTLE_S)  # the measurement is of an agent left idle; nothing to wait on
            if agent.proc is None:
                raise RuntimeError("the agent did not start")
            bootloader = agent.proc.pid
            (python,) = children(bootloader)
            rss = {pid: status_kb(pid, "VmRSS") / 1024 for pid in (bootloader, python)}
            pss = {pid: status_kb(pid, "Pss") / 1024 for pid in (bootloader, python)}
        finally:
            agent.stop()
            control.stop()
    total = rss[bootloader] + rss[python]
    return (
        f"idle RSS, connected: agent {rss[python]:.1f} MB + bootloader {rss[bootloader]:.1f} MB "
        f"= {total:.1f} MB (goal <= {RSS_GOAL_MB} MB: {verdict(total <= RSS_GOAL_MB)}); "
        f"PSS {pss[python] + pss[bootloader]:.1f} MB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", type=Path)
    parser.add_argument("--no-rss", action="store_true", help="skip the idle memory (it needs .venv)")
    args = parser.parse_args()
    binary: Path = args.binary
    size = binary.stat().st_blocks * 512 / MB  # on disk, as du counts it
    print(f"size on disk: {size:.1f} MB (goal <= {SIZE_GOAL_MB} MB: {verdict(size <= SIZE_GOAL_MB)})")
    # The first run after the build reads a file still in the page cache (dropping the cache
    # needs root and is not reliable in a container); it still pays the whole unpacking.
    first, _ = version_seconds(binary)
    runs = [version_seconds(binary) for _ in range(VERSION_RUNS)]
    median = statistics.median(wall for wall, _ in runs)
    cpu = statistics.median(cpu for _, cpu in runs)
    print(
        f"--version: first run {first:.2f} s, median of {VERSION_RUNS} {median:.2f} s, CPU {cpu:.2f} s "
        f"(goal <= {VERSION_GOAL_S:g} s: {verdict(max(first, median) <= VERSION_GOAL_S)}; "
        f"load average {os.getloadavg()[0]:.1f})"
    )
    if args.no_rss:
        print("idle RSS: not measured (needs the development virtualenv .venv for a control plane)")
    else:
        print(idle_memory(binary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
