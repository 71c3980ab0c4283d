"""``CountingSink``: a record sink that counts a command's streamed output without keeping it,
so that a test measures the plugin's memory, not the sink's."""

from __future__ import annotations

from typing import Any

import msgspec

from bridgehead.sdk.testing import ListSink


class CountingSink(ListSink):
    """Counts streamed output without keeping it, so the test measures the plugin's memory."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = {"stdout": 0, "stderr": 0}
        self.final: dict[str, Any] | None = None

    async def put_many(self, items: Any) -> None:
        for item in items:
            record = msgspec.json.decode(item)
            if "stream" in record:
                assert record["offset"] == self.bytes[record["stream"]]
                self.bytes[record["stream"]] += len(record["data"].encode())
            else:
                self.final = record

    async def put(self, data: bytes) -> None:
        await self.put_many([data])
