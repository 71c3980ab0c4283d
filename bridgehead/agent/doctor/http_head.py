"""Reading the head of an HTTP/1.1 answer off a stream: a proxy's answer to CONNECT, and the
control plane's to GET /healthz (doctor speaks just enough HTTP for those two)."""

from __future__ import annotations

import asyncio

MAX_HEAD_BYTES = 64 * 1024


class BadAnswer(Exception):
    """What came back is not an HTTP answer."""


async def read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    """Status, reason and headers (lower-case names) of an HTTP/1.1 answer."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise BadAnswer(f"the server closed the connection after {len(exc.partial)} bytes") from None
    except asyncio.LimitOverrunError:
        raise BadAnswer(f"an HTTP head over {MAX_HEAD_BYTES} bytes") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise BadAnswer(f"not an HTTP answer: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers
