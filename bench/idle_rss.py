"""Idle agent memory: RSS of a connected agent with no jobs, beside a bare interpreter's.

The agent imports plugin libraries (aiohttp for rest) only when a job first needs them, so an
idle agent carries the interpreter, asyncio, websockets, msgspec, cryptography and SQLite.
The MID Server's default JVM heap is 1 GB, for comparison.

    .venv/bin/python bench/idle_rss.py
"""

from __future__ import annotations

import subprocess
import sys
import time

from _cluster import cluster


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    time.sleep(1)
    bare_mb = rss_mb(bare.pid)
    bare.kill()
    with cluster() as (control, agent):
        assert agent.proc is not None
        time.sleep(6)  # a few heartbeats: the session is fully up and idle
        idle = rss_mb(agent.proc.pid)
        api = control.api()
        api.wait_done(api.submit("rest", {"connection": "none", "path": "/"})["id"])  # fails: no such profile
        api.wait_done(api.submit("echo", {"count": 1000})["id"])
        time.sleep(2)
        after = rss_mb(agent.proc.pid)
        control_mb = rss_mb(control.proc.pid) if control.proc else 0.0
    print("idle RSS bench (Linux VmRSS)")
    print(f"  bare python interpreter        {bare_mb:6.1f} MB")
    print(
        f"  agent, connected (mutual TLS), idle {idle:6.1f} MB   goal <= 45 MB"
        f"  ({idle / bare_mb:.1f}x a bare interpreter; MID Server default heap 1024 MB)"
    )
    print(f"  agent after 2 jobs             {after:6.1f} MB")
    print(f"  control plane (for reference)  {control_mb:6.1f} MB")


if __name__ == "__main__":
    main()
