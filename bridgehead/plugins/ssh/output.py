"""``CommandOutput``: a command's stdout and stderr bytes turned into records.

The same shapes whatever runs the command (an SSH channel, a local process, a PowerShell
remoting pipeline), so a job's consumer never cares which:

    short output (up to the profile's inline_output_bytes): one record
        {"exit_code", "stdout", "stderr"}
    longer: chunk records {"stream", "offset", "data"} as the output comes, then a final
        {"exit_code", "stdout_bytes", "stderr_bytes", "streamed": true}

Offsets count bytes of the stream; ``data`` is the UTF-8 text of those bytes (invalid bytes
replaced, and a character split between two chunks kept whole in the later one).
"""

from __future__ import annotations

import codecs
import time
from typing import Any

from bridgehead.sdk import JobContext, SourceError

STREAMS = ("stdout", "stderr")
_PROGRESS_EVERY_S = 1.0


class CommandOutput:
    def __init__(self, ctx: JobContext[Any], inline_output_bytes: int, max_output_bytes: int) -> None:
        self.ctx = ctx
        self.inline_output_bytes = inline_output_bytes
        self.max_output_bytes = max_output_bytes
        self.inline: dict[str, bytearray] = {s: bytearray() for s in STREAMS}
        self.offsets = dict.fromkeys(STREAMS, 0)
        self.decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in STREAMS}
        self.streaming = False
        self.total = 0
        self._last_progress = time.monotonic()

    async def add(self, stream: str, data: bytes) -> None:
        """``data`` more of ``stream``; may wait on the record stream (backpressure)."""
        self.total += len(data)
        if self.total > self.max_output_bytes:
            raise SourceError(
                f"the command wrote more than max_output_bytes = {self.max_output_bytes:,} and was stopped",
                code="output_too_large",
            )
        await self._take(stream, data)
        now = time.monotonic()
        if self.streaming and now - self._last_progress >= _PROGRESS_EVERY_S:
            self._last_progress = now
            self.ctx.progress(self.total, None, f"{self.total:,} bytes of output")

    async def _take(self, stream: str, data: bytes) -> None:
        if not self.streaming:
            self.inline[stream] += data
            if sum(map(len, self.inline.values())) <= self.inline_output_bytes:
                return
            self.streaming = True  # too much for one record: send what was kept, then stream
            kept, self.inline = self.inline, {s: bytearray() for s in STREAMS}
            for name, buffered in kept.items():
                if buffered:
                    await self._chunk(name, bytes(buffered))
            return
        await self._chunk(stream, data)

    async def _chunk(self, stream: str, data: bytes) -> None:
        offset = self.offsets[stream]
        self.offsets[stream] = offset + len(data)
        text = self.decoders[stream].decode(data)
        await self.ctx.emit({"stream": stream, "offset": offset, "data": text})

    async def finish(self, exit_code: int) -> None:
        ctx = self.ctx
        if not self.streaming:
            out, err = (bytes(self.inline[s]).decode("utf-8", "replace") for s in STREAMS)
            await ctx.emit({"exit_code": exit_code, "stdout": out, "stderr": err})
            return
        for stream, decoder in self.decoders.items():
            tail = decoder.decode(b"", final=True)
            if tail:
                await ctx.emit({"stream": stream, "offset": self.offsets[stream], "data": tail})
        await ctx.emit(
            {
                "exit_code": exit_code,
                "stdout_bytes": self.offsets["stdout"],
                "stderr_bytes": self.offsets["stderr"],
                "streamed": True,
            }
        )
