"""Whether a server's port answers: a name lookup (in a daemon thread) and a TCP connect."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

from bridgehead.agent.doctor.findings import Finding, fail, ok, warn
from bridgehead.agent.doctor.threads import in_thread

UNREACHABLE = "check that the server runs and listens there, and that no firewall is in the way"


async def tcp_connect(host: str, port: int) -> str:
    """'' once a connection to ``host:port`` opened (and closed again), else what went wrong."""
    try:
        infos = await in_thread(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    failures = []
    for address in dict.fromkeys(str(info[4][0]) for info in infos):
        try:
            _reader, writer = await asyncio.open_connection(address, port)
        except OSError as exc:
            failures.append(f"{address}:{port}: {exc.strerror or exc}")
            continue
        writer.close()
        await writer.wait_closed()
        return ""
    return "; ".join(failures)


async def reach_all(targets: Sequence[tuple[str, int]]) -> Finding:
    """Every target at once: ok if all answer, a warning if only some do, a failure if none."""
    problems = await asyncio.gather(*(tcp_connect(host, port) for host, port in targets))
    names = [f"{host}:{port}" for host, port in targets]
    answered = [name for name, problem in zip(names, problems, strict=True) if not problem]
    failed = [f"{name}: {problem}" for name, problem in zip(names, problems, strict=True) if problem]
    if not failed:
        return ok(f"{', '.join(answered)} accept{'s' if len(answered) == 1 else ''} TCP connections")
    if answered:
        return warn(f"{', '.join(answered)} answer; {'; '.join(failed)}", UNREACHABLE)
    return fail(f"cannot connect: {'; '.join(failed)}", UNREACHABLE)
