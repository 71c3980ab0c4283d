"""``JsonOutput``: a script's stdout, one JSON array (``output = "json"``), as one record per
element: objects as they are, other values as ``{"value": ...}``."""

from __future__ import annotations

import json
from typing import Any

from bridgehead.plugins.powershell.params import MiB
from bridgehead.plugins.ssh import CommandOutput
from bridgehead.sdk import JobContext, SourceError

# The array is parsed whole: this bounds the memory it takes.
MAX_JSON_BYTES = 64 * MiB


class JsonOutput(CommandOutput):
    def __init__(self, ctx: JobContext[Any], inline_output_bytes: int, max_output_bytes: int) -> None:
        super().__init__(ctx, inline_output_bytes, min(max_output_bytes, MAX_JSON_BYTES))

    async def _take(self, stream: str, data: bytes) -> None:
        self.inline[stream] += data  # add() has checked the total against the limit

    async def add(self, stream: str, data: bytes) -> None:
        if self.total + len(data) > self.max_output_bytes:
            raise SourceError(
                f'the script\'s JSON output passed {self.max_output_bytes:,} bytes; use output = "text" to stream it',
                code="output_too_large",
            )
        await super().add(stream, data)

    async def finish(self, exit_code: int) -> None:
        stdout = bytes(self.inline["stdout"]).decode("utf-8", "replace").strip()
        stderr = bytes(self.inline["stderr"]).decode("utf-8", "replace").strip()
        if exit_code != 0:
            raise SourceError(
                f"the script exited {exit_code}: {stderr[-2000:] or stdout[-2000:]}", code="script_failed"
            )
        try:
            values: Any = json.loads(stdout) if stdout else []
        except ValueError as exc:
            raise SourceError(f"the script's output is not JSON ({exc}): {stdout[:200]!r}", code="bad_output") from None
        if not isinstance(values, list):
            values = [values]
        await self.ctx.emit_many(v if isinstance(v, dict) else {"value": v} for v in values)
