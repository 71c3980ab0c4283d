"""What a process really did, in order: ``strace`` output parsed into system calls, and the
websocket messages its socket writes carried.

Used to prove "persist, then acknowledge" at the level where it matters: a write to the
database's WAL, then a flush (``fsync``/``fdatasync``) of that file that started after the
write ended, then the socket write carrying the acknowledgement. strace serialises the events
of all threads into one sequence (a call interrupted by another thread's event is printed as
``<unfinished ...>`` at its entry and ``<... resumed>`` at its exit), so each call gets an
entry and an exit position in that sequence, and "before" means a smaller position.

Traced with ``-xx`` (every byte as ``\\xNN``, paths too) and ``-y`` (each descriptor's path),
so buffers and file names decode exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLUSHES = ("fsync", "fdatasync")
WRITES = ("write", "writev", "sendto", "sendmsg", "pwrite64", "pwritev", "pwritev2")


def strace_command(output: Path) -> list[str]:
    """The prefix that runs a command under strace, following threads and children, writing
    every write and flush (with its whole buffer) to ``output``."""
    calls = ",".join(WRITES + FLUSHES)
    return [
        "strace",
        "-f",
        "-qq",
        "-xx",
        "-y",
        "-s",
        "4194304",
        "-e",
        "signal=none",
        "-e",
        f"trace={calls}",
        "-o",
        str(output),
    ]


@dataclass
class Call:
    pid: int
    name: str
    fd: int
    path: str  # what the descriptor named: a file's path, or "socket:[inode]"
    data: bytes  # for writes, the bytes the call actually wrote
    entry: int  # position of its entry in the trace's sequence of events
    exit: int = -1  # position of its exit; -1 while unfinished (a call the process died in)
    result: int = 0

    @property
    def is_socket(self) -> bool:
        return self.path.startswith(("socket:", "TCP:", "TCPv6:"))


_LINE = re.compile(r"^(\d+)\s+(.*)$")  # strace pads the pid column when pids differ in width
_CALL = re.compile(r"^(\w+)\((\d+)<((?:\\x[0-9a-f]{2})*)>(.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_STRING = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')
_RESULT = re.compile(r"\)\s+=\s+(-?\d+)")


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace("\\x", ""))


def parse(text: str) -> list[Call]:
    """The calls of a trace, in order of entry (only those on a file descriptor)."""
    calls: list[Call] = []
    unfinished: dict[tuple[int, str], Call] = {}
    for position, line in enumerate(text.splitlines()):
        match = _LINE.match(line)
        if match is None:
            continue
        pid, rest = int(match.group(1)), match.group(2)
        resumed = _RESUMED.match(rest)
        if resumed is not None:
            call = unfinished.pop((pid, resumed.group(1)), None)
            if call is not None:
                _finish(call, resumed.group(2), position)
            continue
        started = _CALL.match(rest)
        if started is None:
            continue
        name, fd, path, args = started.groups()
        call = Call(pid, name, int(fd), _hex(path).decode(errors="replace"), b"", position)
        if name in WRITES:
            call.data = b"".join(_hex(s) for s in _STRING.findall(args))
        calls.append(call)
        if args.endswith("<unfinished ...>"):
            unfinished[(pid, name)] = call
        else:
            _finish(call, args, position)
    return calls


def _finish(call: Call, tail: str, position: int) -> None:
    call.exit = position
    result = _RESULT.search(tail)
    call.result = int(result.group(1)) if result else -1
    if call.name in WRITES:
        call.data = call.data[: max(call.result, 0)]  # a short write wrote only its head


@dataclass
class Sent:
    """One protocol message a process wrote to a websocket, and the socket write that
    completed its frame (the moment it left the process)."""

    message: dict[str, Any]
    call: Call


@dataclass
class _Stream:
    buffer: bytearray = field(default_factory=bytearray)
    websocket: bool = False


def sent_messages(calls: list[Call]) -> list[Sent]:
    """Every JSON message written in websocket frames (masked or not), in order. A socket's
    byte stream becomes frames once its HTTP upgrade is written (the request, on the agent;
    the 101 answer, on the control plane)."""
    # Keyed by the socket's inode (in ``path``): unique while it is open, shared by threads.
    streams: dict[str, _Stream] = {}
    out: list[Sent] = []
    for call in calls:
        if not call.is_socket or call.name not in WRITES or not call.data or call.exit < 0:
            continue
        key = call.path
        if call.data.startswith((b"GET /api/v1/agent/connect", b"HTTP/1.1 101")):
            streams[key] = _Stream(websocket=True)  # a new connection on this descriptor
            continue
        if call.data.startswith((b"GET ", b"POST ", b"HTTP/1.1 ")):
            streams[key] = _Stream(websocket=False)
            continue
        stream = streams.setdefault(key, _Stream())
        if not stream.websocket:
            continue
        stream.buffer += call.data
        for payload in _frames(stream.buffer):
            decoded = json.loads(payload)
            for message in decoded if isinstance(decoded, list) else [decoded]:
                out.append(Sent(message, call))
    return out


def _frames(buffer: bytearray) -> Iterator[bytes]:
    """Pop every complete text or binary frame off ``buffer``; leave a partial one."""
    while len(buffer) >= 2:
        opcode, length, offset = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
        masked = bool(buffer[1] & 0x80)
        if length == 126:
            if len(buffer) < 4:
                return
            length, offset = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            if len(buffer) < 10:
                return
            length, offset = int.from_bytes(buffer[2:10], "big"), 10
        key = bytes(buffer[offset : offset + 4]) if masked else b""
        offset += 4 if masked else 0
        if len(buffer) < offset + length:
            return
        payload = bytes(buffer[offset : offset + length])
        del buffer[: offset + length]
        if masked:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        if opcode in (1, 2):
            yield payload


def first_write(calls: list[Call], file_suffix: str, needle: bytes, after: int = -1) -> Call:
    """The first finished write to a file named ``...file_suffix`` holding ``needle``."""
    for call in calls:
        if (
            call.name in WRITES
            and call.entry > after
            and call.exit >= 0
            and call.path.endswith(file_suffix)
            and needle in call.data
        ):
            return call
    raise AssertionError(f"no write to *{file_suffix} holds {needle!r}: the premise of the trace did not happen")


def flush_between(calls: list[Call], file_suffix: str, after: Call, before: Call) -> Call | None:
    """A flush of ``...file_suffix`` that began after ``after`` ended and ended before
    ``before`` began: the one that makes ``after``'s bytes durable before ``before`` runs."""
    for call in calls:
        if (
            call.name in FLUSHES
            and call.path.endswith(file_suffix)
            and call.result == 0
            and call.entry > after.exit
            and 0 <= call.exit < before.entry
        ):
            return call
    return None


def stop_traced(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process strace runs (strace itself would only detach from it), then wait
    for strace to write the end of the trace and exit."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    with contextlib.suppress(OSError):
        for pid in children.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
