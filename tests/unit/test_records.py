"""RecordArray (records encoded together as one JSON array) and the records frame built from arrays."""

from __future__ import annotations

import msgspec
import pytest

from bridgehead.protocol import Records, decode_agent_frame, encode
from bridgehead.protocol.codec import encode_records
from bridgehead.sdk.records import RecordArray


class Row(msgspec.Struct):
    n: int
    s: str


class Pair(msgspec.Struct, array_like=True):
    n: int
    s: str


def test_structs_encode_to_one_array_of_their_records() -> None:
    """of_structs counts the structs and each element is that struct's JSON object."""
    array = RecordArray.of_structs([Row(1, "a"), Row(2, "b,c")])
    assert 2 == array.count
    assert [b'{"n":1,"s":"a"}', b'{"n":2,"s":"b,c"}'] == array.records()
    assert len(b'{"n":1,"s":"a"}') + len(b'{"n":2,"s":"b,c"}') == array.size


def test_structs_that_encode_as_arrays_are_refused() -> None:
    """An array_like struct would not give JSON objects: refused, not streamed."""
    with pytest.raises(TypeError, match="Pair"):
        RecordArray.of_structs([Row(1, "a"), Pair(2, "b")])


def test_split_keeps_every_record_once_in_order() -> None:
    """split(n): the first n records, then the rest."""
    records = [b'{"n":%d}' % n for n in range(5)]
    head, rest = RecordArray.of_encoded(records).split(2)
    assert (records[:2], records[2:]) == (head.records(), rest.records())
    assert (2, 3) == (head.count, rest.count)


def test_records_frame_from_arrays_is_the_records_message() -> None:
    """encode_records splices arrays into the same bytes encode(Records) gives, and they decode back."""
    arrays = [RecordArray.of_encoded([b'{"a":1}', b'{"a":[2]}']), RecordArray.of_encoded([b'{"b":"]}"}'])]
    frame = encode_records("job-1", 3, 7, [a.body for a in arrays])
    raws = [msgspec.Raw(r) for a in arrays for r in a.records()]
    assert encode(Records(job_id="job-1", attempt=3, seq=7, records=raws)) == frame
    [message] = decode_agent_frame(frame, 1 << 20)
    assert isinstance(message, Records)
    assert (7, [b'{"a":1}', b'{"a":[2]}', b'{"b":"]}"}']) == (message.seq, [bytes(r) for r in message.records])
