"""Records are bounded in depth (MAX_RECORD_DEPTH): the exact depth walk agrees with a parser
on any JSON, and each way a plugin emits refuses a record past the bound with ``bad_record``
while records within it pass, however many brackets their strings hold."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridgehead.sdk import JobError
from bridgehead.sdk.nesting import MAX_RECORD_DEPTH, depth
from bridgehead.sdk.records import RecordArray
from bridgehead.sdk.testing import ListSink, job_context

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='{}[]"\\ab\u00e9'),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(alphabet='{["\\x'), inner, max_size=4),
    max_leaves=40,
)


def parsed_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(parsed_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(parsed_depth, value), default=0)
    return 0


@given(JSON)
def test_the_depth_walk_agrees_with_a_parser(value: Any) -> None:
    assert parsed_depth(value) == depth(json.dumps(value).encode())


def nested(levels: int) -> dict[str, Any]:
    """A record ``levels`` deep, with strings full of brackets on the way."""
    record: dict[str, Any] = {"leaf": "{[{[" * 100}
    for _ in range(levels - 1):
        record = {"n": record, "s": "[[[{{{"}
    return record


async def emitted(how: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sink = ListSink()
    ctx = job_context(None, sink)
    if how == "emit":
        for record in records:
            await ctx.emit(record)
    elif how == "emit_many":
        await ctx.emit_many(records)
    elif how == "emit_encoded":
        await ctx.emit_encoded([msgspec.json.encode(r) for r in records])
    else:
        await ctx.emit_array(RecordArray.of_encoded([msgspec.json.encode(r) for r in records]))
    return [msgspec.json.decode(r) for r in sink.records]


@pytest.mark.parametrize("how", ["emit", "emit_many", "emit_encoded", "emit_array"])
async def test_a_record_past_the_bound_fails_the_job_and_one_at_it_passes(how: str) -> None:
    at_the_bound = [{"flat": "{" * 500}, nested(MAX_RECORD_DEPTH), {"flat": "[" * 500}]
    assert depth(msgspec.json.encode(at_the_bound[1])) == MAX_RECORD_DEPTH  # premise
    assert at_the_bound == await emitted(how, at_the_bound)
    with pytest.raises(JobError) as refused:
        await emitted(how, [{"ok": 1}, nested(MAX_RECORD_DEPTH + 1)])
    assert refused.value.code == "bad_record"
    assert f"record 2 is nested more than {MAX_RECORD_DEPTH} levels deep" in str(refused.value)
