"""JobContext.emit_encoded: records encoded by the plugin are still checked, and named when bad."""

from __future__ import annotations

from typing import Any

import pytest

from bridgehead.core.errors import JobError, RecordTooLarge
from bridgehead.sdk import JobContext
from bridgehead.sdk.testing import ListSink, job_context


def context(sink: ListSink, max_record_bytes: int = 100) -> JobContext[Any]:
    return job_context(None, sink, max_record_bytes=max_record_bytes)


async def test_good_records_pass_in_order_and_are_counted() -> None:
    sink = ListSink()
    ctx = context(sink)
    await ctx.emit_encoded([b'{"a":1}', b'{"a":2}'])
    await ctx.emit_encoded([b'{"a":3}'])
    assert [b'{"a":1}', b'{"a":2}', b'{"a":3}'] == sink.records
    assert 3 == ctx.records_emitted


@pytest.mark.parametrize("bad", [b"[1]", b"", "{}", bytearray(b"{}"), None])
async def test_a_record_that_is_not_an_encoded_object_is_named(bad: Any) -> None:
    sink = ListSink()
    ctx = context(sink)
    await ctx.emit_encoded([b"{}"])
    with pytest.raises(JobError, match="record 3 is not an encoded JSON object") as caught:
        await ctx.emit_encoded([b"{}", bad, b"{}"])
    assert "bad_record" == caught.value.code
    assert [b"{}"] == sink.records  # nothing of the bad batch went out


async def test_a_record_over_the_limit_is_named_with_its_size() -> None:
    sink = ListSink()
    ctx = context(sink, max_record_bytes=10)
    with pytest.raises(RecordTooLarge, match="record 2 is 12 bytes, over .* of 10"):
        await ctx.emit_encoded([b"{}", b'{"a":"xxxx"}'])
    assert [] == sink.records
