"""A few probe sessions in a process of their own, for bench/many_agents.py.

The load generator's loop carries thousands of sessions, so the heartbeat latency it sees
includes its own delay in reading the answers. These probes heartbeat like every other
session but from an idle loop: their latency is the control plane's answer time plus the
kernel's scheduling, not the generator's backlog.

Commands on stdin, one a line: ``reset`` (forget latencies so far), ``report`` (print one
JSON line: the latencies in seconds and the count of sessions that ended), ``quit``.

    python bench/_probe.py WS_URL ANCHOR_PEM DATA_DIR...
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from _load_client import LoadAgent, Stats
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridgehead.agent.identity import Identity


def identity(data_dir: Path, anchor: bytes) -> Identity:
    key = serialization.load_pem_private_key((data_dir / "agent.key").read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return Identity(
        agent=data_dir.name,
        cluster="default",
        agent_id="",
        key=key,
        data_dir=data_dir,
        certificate=(data_dir / "agent.crt").read_bytes(),
        server_ca=anchor,
    )


async def main() -> None:
    url, anchor_file, *dirs = sys.argv[1:]
    anchor = Path(anchor_file).read_bytes()
    stats = Stats()
    gate = asyncio.Semaphore(len(dirs))
    agents = [LoadAgent(identity(Path(d), anchor), url, stats) for d in dirs]
    tasks = [asyncio.create_task(a.run(gate)) for a in agents]
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "reset":
            stats.beat_latency_s.clear()
        elif line == "report":
            ends = sum(stats.session_ends.values())
            report = {"latency_s": stats.beat_latency_s, "ends": ends, "connected": sum(a.connected for a in agents)}
            print(json.dumps(report), flush=True)
        else:  # quit, or the bench went away
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
