"""Unit tests of the outbound record stream: memory window, disk spool, backpressure, resume."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgehead.agent.journal import Journal
from bridgehead.agent.stream import OutboundStream, SpoolBudget, StreamClosed
from bridgehead.protocol import Complete, ErrorInfo
from bridgehead.sdk.records import RecordArray

JOB = "job-1"
ATTEMPT = 1
# A put blocks on an event only (the spool is written synchronously): once every other ready
# task has run this many times over, a put still pending is blocked, whatever the machine's
# speed. One that should unblock is given UNBLOCK_S (generous, so slow machines do not flake).
LOOP_TURNS = 20
UNBLOCK_S = 5.0


def rec(n: int, size: int = 16) -> bytes:
    """Record number ``n`` as a JSON object of exactly ``size`` bytes."""
    head = b'{"n":%d,"p":"' % n
    pad = size - len(head) - 2
    assert pad >= 0
    return head + b"x" * pad + b'"}'


class Wakes:
    """Counts the stream's wake-ups (the connection's cue that there is something to send)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def journal(db_path: Path) -> Iterator[Journal]:
    j = Journal(db_path)
    j.add_job(JOB, ATTEMPT, "echo", 0.0)
    yield j
    j.close()


def make_stream(
    journal: Journal,
    budget: SpoolBudget,
    *,
    window_records: int = 1000,
    window_bytes: int = 1 << 20,
    next_seq: int = 1,
    job_id: str = JOB,
    wake: Wakes | None = None,
) -> OutboundStream:
    return OutboundStream(
        job_id,
        ATTEMPT,
        journal,
        budget,
        window_records=window_records,
        window_bytes=window_bytes,
        wake=wake or Wakes(),
        next_seq=next_seq,
    )


def spooled_seqs(journal: Journal, job_id: str = JOB) -> list[int]:
    return [seq for seq, _data in journal.spool_read(job_id, ATTEMPT, 0, 1_000_000)]


def mem_seqs(stream: OutboundStream) -> list[int]:
    return [seq for first, records in stream.mem for seq in range(first, first + records.count)]


def take(stream: OutboundStream, max_records: int, max_bytes: int) -> tuple[int, list[bytes]] | None:
    """``take_batch``, with the records one by one."""
    batch = stream.take_batch(max_records, max_bytes)
    if batch is None:
        return None
    first, arrays = batch
    return first, [data for array in arrays for data in array.records()]


def send_and_ack_all(stream: OutboundStream, max_records: int = 1000) -> list[tuple[int, bytes]]:
    """Play the connection: take every batch there is, ack it, and return what was sent, by seq."""
    sent: list[tuple[int, bytes]] = []
    while (batch := take(stream, max_records, 1 << 30)) is not None:
        first, records = batch
        sent.extend(enumerate(records, start=first))
        stream.on_ack(first + len(records) - 1)
    return sent


async def is_blocked(task: asyncio.Task[None]) -> bool:
    for _ in range(LOOP_TURNS):
        await asyncio.sleep(0)  # a turn of the event loop, not a wait on time
    return not task.done()


async def finishes(task: asyncio.Task[None]) -> bool:
    done, _pending = await asyncio.wait({task}, timeout=UNBLOCK_S)
    return bool(done)


# --- SpoolBudget -------------------------------------------------------------------------


def test_budget_reserves_up_to_its_cap() -> None:
    """try_reserve succeeds while the total stays within max_bytes, and refuses beyond it."""
    budget = SpoolBudget(100)
    assert True is budget.try_reserve(60)
    assert True is budget.try_reserve(40)
    assert False is budget.try_reserve(1)
    assert 100 == budget.used


def test_budget_refusal_reserves_nothing() -> None:
    """A refused reservation leaves the budget as it was."""
    budget = SpoolBudget(100, used=90)
    assert False is budget.try_reserve(11)
    assert 90 == budget.used


def test_budget_force_reserve_may_exceed_the_cap() -> None:
    """force_reserve (a finished attempt's output must be kept) goes past max_bytes."""
    budget = SpoolBudget(10)
    budget.force_reserve(25)
    assert 25 == budget.used


def test_budget_release_never_goes_negative() -> None:
    """Releasing more than is used leaves zero."""
    budget = SpoolBudget(100, used=10)
    budget.release(30)
    assert 0 == budget.used


async def test_budget_notify_wakes_waiters_and_rearms() -> None:
    """notify() sets the event writers wait on and hands out a fresh one for the next wait."""
    budget = SpoolBudget(100)
    before = budget.changed()
    waiter = asyncio.create_task(before.wait())
    await asyncio.sleep(0)
    budget.notify()
    await asyncio.wait_for(waiter, UNBLOCK_S)
    assert before is not budget.changed()
    assert False is budget.changed().is_set()


# --- memory window, spool, blocking ----------------------------------------------------------


async def test_records_within_the_window_stay_in_memory(journal: Journal) -> None:
    """Up to window_records records are kept in memory only, numbered from 1."""
    budget = SpoolBudget(1 << 20)
    stream = make_stream(journal, budget, window_records=3)
    for n in range(1, 4):
        await stream.put(rec(n))
    assert [1, 2, 3] == mem_seqs(stream)
    assert [] == spooled_seqs(journal)
    assert 0 == budget.used
    assert 3 == stream.record_count


async def test_records_beyond_window_records_go_to_the_spool(journal: Journal) -> None:
    """Once window_records are in memory, further records are spooled and charged to the budget."""
    budget = SpoolBudget(1 << 20)
    stream = make_stream(journal, budget, window_records=2)
    for n in range(1, 6):
        await stream.put(rec(n))
    assert [1, 2] == mem_seqs(stream)
    assert [3, 4, 5] == spooled_seqs(journal)
    assert 3 * 16 == budget.used
    assert 3 * 16 == journal.spool_bytes()
    assert 5 == stream.record_count


async def test_records_beyond_window_bytes_go_to_the_spool(journal: Journal) -> None:
    """window_bytes bounds memory too: a record that would pass it is spooled."""
    budget = SpoolBudget(1 << 20)
    stream = make_stream(journal, budget, window_records=1000, window_bytes=50)
    for n in range(1, 4):
        await stream.put(rec(n, size=20))
    assert [1, 2] == mem_seqs(stream)
    assert 40 == stream.mem_bytes
    assert [3] == spooled_seqs(journal)


async def test_first_record_is_kept_in_memory_even_if_over_window_bytes(journal: Journal) -> None:
    """An empty window takes one record of any size, so a large record never stalls the stream."""
    budget = SpoolBudget(0)
    stream = make_stream(journal, budget, window_bytes=10)
    await stream.put(rec(1, size=100))
    assert [1] == mem_seqs(stream)


async def test_once_spilled_records_keep_going_to_the_spool(journal: Journal) -> None:
    """After a spill, a smaller record that would fit memory still follows the spooled ones."""
    budget = SpoolBudget(1 << 20)
    stream = make_stream(journal, budget, window_records=10, window_bytes=50)
    await stream.put(rec(1, size=30))
    await stream.put(rec(2, size=30))
    await stream.put(rec(3, size=18))  # 30 + 18 would fit the window
    assert [1] == mem_seqs(stream)
    assert [2, 3] == spooled_seqs(journal)


async def test_put_wakes_the_connection_for_records_in_memory(journal: Journal) -> None:
    """A record put into memory wakes the sender."""
    wakes = Wakes()
    stream = make_stream(journal, SpoolBudget(0), wake=wakes)
    await stream.put(rec(1))
    assert 1 == wakes.count


async def test_put_blocks_when_window_and_spool_are_full(journal: Journal) -> None:
    """With memory and spool full, put blocks; acking in-memory records alone does not free the
    spool, and acking the spooled ones unblocks it."""
    budget = SpoolBudget(2 * 16)
    stream = make_stream(journal, budget, window_records=2)
    for n in range(1, 5):
        await stream.put(rec(n))
    assert [3, 4] == spooled_seqs(journal)

    blocked = asyncio.create_task(stream.put(rec(5)))
    assert await is_blocked(blocked)
    assert 4 == stream.record_count

    assert (1, [rec(1), rec(2)]) == take(stream, 10, 1 << 20)
    stream.on_ack(2)
    assert [3, 4] == mem_seqs(stream)  # read back from the spool, still spooled until acked
    assert await is_blocked(blocked)

    assert (3, [rec(3), rec(4)]) == take(stream, 10, 1 << 20)
    stream.on_ack(4)
    assert await finishes(blocked)
    blocked.result()
    assert 5 == stream.record_count
    assert [(5, rec(5))] == send_and_ack_all(stream)


async def test_spool_budget_is_shared_across_attempts(journal: Journal) -> None:
    """A spool filled by one attempt blocks another attempt's overflow until the first is acked."""
    journal.add_job("job-2", ATTEMPT, "echo", 0.0)
    budget = SpoolBudget(2 * 16)
    first = make_stream(journal, budget, window_records=1)
    second = make_stream(journal, budget, window_records=1, job_id="job-2")
    for n in range(1, 4):
        await first.put(rec(n))
    await second.put(rec(1))

    blocked = asyncio.create_task(second.put(rec(2)))
    assert await is_blocked(blocked)

    assert [(1, rec(1)), (2, rec(2)), (3, rec(3))] == send_and_ack_all(first)
    assert await finishes(blocked)
    assert [2] == spooled_seqs(journal, "job-2")


async def test_close_makes_a_blocked_put_raise(journal: Journal) -> None:
    """close() (the attempt was abandoned) wakes a blocked put with StreamClosed."""
    budget = SpoolBudget(0)
    stream = make_stream(journal, budget, window_records=1)
    await stream.put(rec(1))
    blocked = asyncio.create_task(stream.put(rec(2)))
    assert await is_blocked(blocked)

    stream.close()
    assert await finishes(blocked)
    with pytest.raises(StreamClosed):
        blocked.result()
    assert [] == mem_seqs(stream)
    assert 0 == stream.mem_bytes


async def test_put_after_close_raises(journal: Journal) -> None:
    """Nothing more can be put on a closed stream, even with room to spare."""
    stream = make_stream(journal, SpoolBudget(1 << 20))
    stream.close()
    with pytest.raises(StreamClosed):
        await stream.put(rec(1))
    assert 0 == stream.record_count


# --- sending and acknowledging -----------------------------------------------------------


async def test_take_batch_returns_none_when_nothing_is_unsent(journal: Journal) -> None:
    """No records, or all sent: no batch."""
    stream = make_stream(journal, SpoolBudget(0))
    assert None is take(stream, 10, 1000)
    await stream.put(rec(1))
    assert (1, [rec(1)]) == take(stream, 10, 1000)
    assert None is take(stream, 10, 1000)


async def test_take_batch_respects_max_records_and_max_bytes(journal: Journal) -> None:
    """A batch holds at most max_records and max_bytes, continuing where the last one ended."""
    stream = make_stream(journal, SpoolBudget(0))
    for n in range(1, 8):
        await stream.put(rec(n))
    assert (1, [rec(1), rec(2)]) == take(stream, 2, 1000)
    assert (3, [rec(3), rec(4), rec(5)]) == take(stream, 10, 3 * 16 + 15)
    assert (6, [rec(6), rec(7)]) == take(stream, 10, 1000)


async def test_take_batch_sends_an_oversized_record_alone(journal: Journal) -> None:
    """A record bigger than max_bytes still goes, alone in its batch."""
    stream = make_stream(journal, SpoolBudget(0))
    await stream.put(rec(1, size=100))
    await stream.put(rec(2))
    assert (1, [rec(1, size=100)]) == take(stream, 10, 50)
    assert (2, [rec(2)]) == take(stream, 10, 50)


async def test_stale_and_repeated_acks_change_nothing(journal: Journal) -> None:
    """An ack at or below the last one is ignored."""
    stream = make_stream(journal, SpoolBudget(0))
    for n in range(1, 4):
        await stream.put(rec(n))
    take(stream, 10, 1000)
    stream.on_ack(2)
    stream.on_ack(2)
    stream.on_ack(1)
    assert 2 == stream.acked
    assert [3] == mem_seqs(stream)


async def test_ack_beyond_the_last_record_is_clamped(journal: Journal) -> None:
    """An ack past record_count acknowledges what exists and no more."""
    stream = make_stream(journal, SpoolBudget(0))
    await stream.put(rec(1))
    take(stream, 10, 1000)
    stream.on_ack(99)
    assert 1 == stream.acked
    await stream.put(rec(2))
    assert (2, [rec(2)]) == take(stream, 10, 1000)


async def test_ack_of_unsent_records_moves_sending_past_them(journal: Journal) -> None:
    """If the control plane acks records this connection has not sent (it had them already), they are skipped."""
    stream = make_stream(journal, SpoolBudget(0))
    for n in range(1, 6):
        await stream.put(rec(n))
    assert (1, [rec(1), rec(2)]) == take(stream, 2, 1000)
    stream.on_ack(4)
    assert (5, [rec(5)]) == take(stream, 10, 1000)


async def test_records_read_back_from_the_spool_respect_window_bytes(journal: Journal) -> None:
    """Refilling memory from the spool stops before window_bytes would be passed."""
    stream = make_stream(journal, SpoolBudget(1 << 20), window_records=10, window_bytes=50)
    for n in range(1, 6):
        await stream.put(rec(n, size=20))
    assert [1, 2] == mem_seqs(stream)
    take(stream, 10, 1000)
    stream.on_ack(1)
    assert [2, 3] == mem_seqs(stream)
    assert 40 == stream.mem_bytes


@pytest.mark.parametrize(
    ("seed", "window_records", "window_bytes", "spool_records"),
    [
        (1, 1, 1 << 20, 1),
        (2, 3, 1 << 20, 5),
        (3, 5, 100, 2),
        (4, 50, 1 << 20, 0),
        (5, 2, 1 << 20, 200),
        (6, 7, 300, 13),
    ],
)
async def test_every_record_arrives_once_in_order(
    journal: Journal, seed: int, window_records: int, window_bytes: int, spool_records: int
) -> None:
    """A producer pushing through memory, spool and backpressure, drained by random batches and
    acks, delivers seqs 1..N contiguously, each exactly once, with the right data; then nothing
    is left in memory, spool or budget."""
    rng = random.Random(seed)
    total = 300
    sizes = [rng.randint(20, 40) for _ in range(total)]
    budget = SpoolBudget(spool_records * 40)
    stream = make_stream(journal, budget, window_records=window_records, window_bytes=window_bytes)

    async def produce() -> None:
        for n in range(1, total + 1):
            await stream.put(rec(n, size=sizes[n - 1]))

    producer = asyncio.create_task(produce())
    received: list[tuple[int, bytes]] = []
    async with asyncio.timeout(UNBLOCK_S * 4):
        while len(received) < total:
            if producer.done():
                producer.result()  # surface the producer's failure, if any
            batch = take(stream, rng.randint(1, 10), rng.randint(1, 200))
            if batch is None:
                # The window may be full of sent records: ack them all so that it moves on.
                if received:
                    stream.on_ack(received[-1][0])
                await asyncio.sleep(0)
                continue
            first, records = batch
            received.extend(enumerate(records, start=first))
            if rng.random() < 0.7:
                stream.on_ack(first + len(records) - 1 - rng.randint(0, len(records) - 1))
            await asyncio.sleep(0)
        stream.on_ack(total)
        await producer

    assert [(n, rec(n, size=sizes[n - 1])) for n in range(1, total + 1)] == received
    assert total == stream.acked
    assert [] == mem_seqs(stream)
    assert [] == spooled_seqs(journal)
    assert 0 == budget.used
    assert 0 == journal.spool_bytes()


# --- reconnect: resume -------------------------------------------------------------------


async def test_resume_resends_from_acked_plus_one(journal: Journal) -> None:
    """After a reconnect, the stream re-sends from the control plane's last ack onwards."""
    stream = make_stream(journal, SpoolBudget(0))
    for n in range(1, 6):
        await stream.put(rec(n))
    assert (1, [rec(n) for n in range(1, 6)]) == take(stream, 10, 1000)
    stream.on_ack(2)

    stream.resume(2)
    assert (3, [rec(3), rec(4), rec(5)]) == take(stream, 10, 1000)


async def test_resume_takes_a_newer_ack_from_the_control_plane(journal: Journal) -> None:
    """If the control plane got more than it acked before the cut, resume starts after that."""
    stream = make_stream(journal, SpoolBudget(0))
    for n in range(1, 6):
        await stream.put(rec(n))
    take(stream, 10, 1000)
    stream.on_ack(1)

    stream.resume(4)
    assert 4 == stream.acked
    assert (5, [rec(5)]) == take(stream, 10, 1000)


async def test_resume_with_nothing_acked_resends_everything(journal: Journal) -> None:
    """resume(0) re-sends every record from 1."""
    stream = make_stream(journal, SpoolBudget(0))
    for n in range(1, 4):
        await stream.put(rec(n))
    take(stream, 10, 1000)
    stream.resume(0)
    assert (1, [rec(1), rec(2), rec(3)]) == take(stream, 10, 1000)


async def test_resume_resends_spooled_records_in_order(journal: Journal) -> None:
    """Resume across memory and spool yields the unacked records once each, in order."""
    budget = SpoolBudget(1 << 20)
    stream = make_stream(journal, budget, window_records=2)
    for n in range(1, 8):
        await stream.put(rec(n))
    assert (1, [rec(1), rec(2)]) == take(stream, 10, 1000)
    stream.on_ack(1)
    assert (3, [rec(3)]) == take(stream, 10, 1000)

    stream.resume(1)
    assert [(n, rec(n)) for n in range(2, 8)] == send_and_ack_all(stream)
    assert 0 == budget.used


async def test_resume_requeues_the_completion(journal: Journal) -> None:
    """A completion sent on the old connection is sent again, after the records, on the new one."""
    stream = make_stream(journal, SpoolBudget(1 << 20))
    await stream.put(rec(1))
    completion = stream.finish("succeeded", None)
    assert False is stream.completion_ready()  # record 1 is not sent yet
    take(stream, 10, 1000)
    assert True is stream.completion_ready()
    stream.completion_sent = True

    stream.resume(0)
    assert False is stream.completion_ready()
    take(stream, 10, 1000)
    assert True is stream.completion_ready()
    assert Complete(job_id=JOB, attempt=ATTEMPT, status="succeeded", record_count=1) == completion


# --- finish: durability across a restart -------------------------------------------------


def restart(db_path: Path, old: Journal, next_seq: int) -> tuple[Journal, SpoolBudget, OutboundStream]:
    """Simulate a crash and restart: the writer commits (as it does before sending ``complete``),
    then the process dies without closing anything, and a new process opens the same file with a
    fresh budget and stream. The old connection is left open, so only what is on disk is seen."""
    old.commit()
    journal = Journal(db_path)
    budget = SpoolBudget(1 << 20, journal.spool_bytes())
    stream = make_stream(journal, budget, window_records=3, next_seq=next_seq)
    return journal, budget, stream


async def test_finish_records_the_outcome_in_the_journal(db_path: Path, journal: Journal) -> None:
    """finish() marks the attempt done, with status, error and next_seq, durably."""
    stream = make_stream(journal, SpoolBudget(1 << 20))
    for n in range(1, 4):
        await stream.put(rec(n))
    error = ErrorInfo(code="source_error", message="boom")
    completion = stream.finish("failed", error)

    assert Complete(job_id=JOB, attempt=ATTEMPT, status="failed", record_count=3, error=error) == completion
    reopened, _budget, _stream = restart(db_path, journal, 4)
    try:
        [job] = reopened.jobs()
        assert (JOB, ATTEMPT, "done", "failed", error, 4) == (
            job.job_id,
            job.attempt,
            job.state,
            job.status,
            job.error,
            job.next_seq,
        )
    finally:
        reopened.close()


async def test_finish_makes_in_memory_records_durable(db_path: Path, journal: Journal) -> None:
    """Unacked records held only in memory survive a restart after finish()."""
    stream = make_stream(journal, SpoolBudget(1 << 20))
    for n in range(1, 6):
        await stream.put(rec(n))
    take(stream, 10, 1000)
    stream.on_ack(2)
    stream.finish("succeeded", None)

    reopened, budget, fresh = restart(db_path, journal, stream.next_seq)
    try:
        fresh.resume(2)
        assert [(n, rec(n)) for n in range(3, 6)] == send_and_ack_all(fresh)
        assert 0 == budget.used
        assert 0 == reopened.spool_bytes()
    finally:
        reopened.close()


async def test_finish_makes_memory_and_spooled_records_durable(db_path: Path, journal: Journal) -> None:
    """With records in both memory and spool, every unacked one survives a restart after finish()."""
    stream = make_stream(journal, SpoolBudget(1 << 20), window_records=2)
    for n in range(1, 7):
        await stream.put(rec(n))
    assert [1, 2] == mem_seqs(stream)
    stream.finish("succeeded", None)

    reopened, _budget, fresh = restart(db_path, journal, stream.next_seq)
    try:
        fresh.resume(0)
        assert [(n, rec(n)) for n in range(1, 7)] == send_and_ack_all(fresh)
    finally:
        reopened.close()


async def test_finish_makes_records_durable_after_a_partial_ack(db_path: Path, journal: Journal) -> None:
    """Records put to memory between two spills (after a partial ack) survive a restart after finish()."""
    stream = make_stream(journal, SpoolBudget(1 << 20), window_records=2)
    for n in range(1, 5):
        await stream.put(rec(n))  # 1-2 in memory, 3-4 spooled
    take(stream, 10, 1000)
    stream.on_ack(2)  # 3-4 read back into memory
    take(stream, 10, 1000)
    stream.on_ack(3)
    await stream.put(rec(5))  # memory
    await stream.put(rec(6))  # spool
    stream.finish("succeeded", None)

    reopened, _budget, fresh = restart(db_path, journal, stream.next_seq)
    try:
        fresh.resume(3)
        assert [(n, rec(n)) for n in range(4, 7)] == send_and_ack_all(fresh)
    finally:
        reopened.close()


async def test_budget_returns_to_zero_after_finish_and_acks(journal: Journal) -> None:
    """Spooling at finish() is charged to the budget and released again by the acks."""
    budget = SpoolBudget(1 << 20)
    stream = make_stream(journal, budget)
    for n in range(1, 4):
        await stream.put(rec(n))
    stream.finish("succeeded", None)
    assert 3 * 16 == budget.used
    assert 3 * 16 == journal.spool_bytes()

    assert [(n, rec(n)) for n in range(1, 4)] == send_and_ack_all(stream)
    assert 0 == budget.used
    assert 0 == journal.spool_bytes()


async def test_budget_after_restart_matches_the_spool_and_drains_to_zero(db_path: Path, journal: Journal) -> None:
    """A restarted agent's budget starts at the spool's size and returns to 0 once all is acked."""
    stream = make_stream(journal, SpoolBudget(1 << 20), window_records=1)
    for n in range(1, 5):
        await stream.put(rec(n))
    take(stream, 10, 1000)
    stream.on_ack(1)
    stream.finish("succeeded", None)

    reopened, budget, fresh = restart(db_path, journal, stream.next_seq)
    try:
        assert reopened.spool_bytes() == budget.used
        assert 3 * 16 == budget.used
        fresh.resume(1)
        assert [2, 3, 4] == [seq for seq, _data in send_and_ack_all(fresh)]
        assert 0 == budget.used
        assert 0 == reopened.spool_bytes()
    finally:
        reopened.close()


# --- put_many ----------------------------------------------------------------------------


async def test_put_many_keeps_a_batch_that_fits_in_memory_with_one_wake(journal: Journal) -> None:
    """A batch within the window lands in memory in order, numbered on from the last record."""
    wakes = Wakes()
    stream = make_stream(journal, SpoolBudget(1 << 20), window_records=10, wake=wakes)
    await stream.put(rec(1))
    wakes.count = 0
    await stream.put_many([rec(n) for n in range(2, 7)])
    assert [2, 3, 4, 5, 6] == mem_seqs(stream)[1:]
    assert 6 == stream.record_count
    assert 1 == wakes.count
    assert [] == spooled_seqs(journal)


async def test_put_many_spills_what_does_not_fit_and_keeps_the_order(journal: Journal) -> None:
    """A batch larger than the window's room fills it, spools the rest, and sends all in order."""
    stream = make_stream(journal, SpoolBudget(1 << 20), window_records=4)
    await stream.put_many([rec(n) for n in range(1, 11)])
    assert [1, 2, 3, 4] == mem_seqs(stream)
    assert list(range(5, 11)) == spooled_seqs(journal)
    await stream.put_many([rec(11)])  # once spilled, later records follow into the spool
    assert list(range(5, 12)) == spooled_seqs(journal)
    sent = send_and_ack_all(stream, max_records=3)
    assert [(n, rec(n)) for n in range(1, 12)] == sent


async def test_put_many_blocks_when_window_and_spool_are_full(journal: Journal) -> None:
    """With no room anywhere the batch waits part-way, and completes once acks free room."""
    stream = make_stream(journal, SpoolBudget(0), window_records=2)
    task = asyncio.create_task(stream.put_many([rec(n) for n in range(1, 6)]))
    assert await is_blocked(task)
    assert [1, 2] == mem_seqs(stream)
    sent: list[tuple[int, bytes]] = []
    while not task.done():
        batch = take(stream, 10, 1 << 30)
        if batch is not None:
            first, records = batch
            sent.extend(enumerate(records, start=first))
            stream.on_ack(first + len(records) - 1)
        await asyncio.sleep(0)
    assert await finishes(task)
    sent += send_and_ack_all(stream)
    assert [(n, rec(n)) for n in range(1, 6)] == sent


# --- put_array: records encoded as one array ------------------------------------------------


def array(first: int, last: int) -> RecordArray:
    return RecordArray.of_encoded([rec(n) for n in range(first, last + 1)])


async def test_put_array_keeps_an_array_that_fits_as_one_run_with_one_wake(journal: Journal) -> None:
    """An array with room in the window is held whole, and sent whole in one batch."""
    wakes = Wakes()
    stream = make_stream(journal, SpoolBudget(0), wake=wakes)
    await stream.put_array(array(1, 5))
    assert (1, 1, 5 * 16) == (len(stream.mem), wakes.count, stream.mem_bytes)
    batch = stream.take_batch(10, 1 << 20)
    assert batch is not None
    first, arrays = batch
    assert (1, [array(1, 5).body]) == (first, [a.body for a in arrays])


async def test_an_array_larger_than_a_batch_is_sent_in_pieces(journal: Journal) -> None:
    """take_batch cuts an array over max_records or max_bytes; each record goes once, in order."""
    stream = make_stream(journal, SpoolBudget(0))
    await stream.put_array(array(1, 10))
    await stream.put(rec(11))
    assert (1, [rec(n) for n in range(1, 4)]) == take(stream, 3, 1 << 20)
    assert (4, [rec(4), rec(5)]) == take(stream, 10, 2 * 16)
    assert [(n, rec(n)) for n in range(6, 12)] == send_and_ack_all(stream, max_records=4)


async def test_resume_inside_an_array_resends_from_acked_plus_one(journal: Journal) -> None:
    """An ack that falls inside an array (the control plane's, after a reconnect) keeps the rest."""
    stream = make_stream(journal, SpoolBudget(0))
    await stream.put_array(array(1, 6))
    take(stream, 10, 1 << 20)
    stream.resume(4)
    assert ([5, 6], 2 * 16) == (mem_seqs(stream), stream.mem_bytes)
    assert [(5, rec(5)), (6, rec(6))] == send_and_ack_all(stream)


async def test_put_array_spills_what_does_not_fit_and_keeps_the_order(journal: Journal) -> None:
    """An array larger than the window's room fills it, spools the rest, and all is sent in order."""
    stream = make_stream(journal, SpoolBudget(1 << 20), window_records=4)
    await stream.put_array(array(1, 2))
    await stream.put_array(array(3, 8))
    assert [1, 2, 3, 4] == mem_seqs(stream)
    assert [5, 6, 7, 8] == spooled_seqs(journal)
    assert [(n, rec(n)) for n in range(1, 9)] == send_and_ack_all(stream, max_records=3)


async def test_finish_makes_unacked_array_records_durable(db_path: Path, journal: Journal) -> None:
    """Records held as arrays are spooled one by one at finish(), and re-sent after a restart."""
    stream = make_stream(journal, SpoolBudget(1 << 20))
    await stream.put_array(array(1, 3))
    await stream.put_array(array(4, 6))
    take(stream, 10, 1 << 20)
    stream.on_ack(2)
    stream.finish("succeeded", None)

    reopened, _budget, fresh = restart(db_path, journal, stream.next_seq)
    try:
        fresh.resume(2)
        assert [(n, rec(n)) for n in range(3, 7)] == send_and_ack_all(fresh)
    finally:
        reopened.close()


async def test_put_many_spools_what_the_budget_allows_then_blocks(journal: Journal) -> None:
    """Past the window, records go to the spool while its budget lasts; the rest wait for acks."""
    stream = make_stream(journal, SpoolBudget(3 * 16), window_records=2)
    task = asyncio.create_task(stream.put_many([rec(n) for n in range(1, 9)]))
    assert await is_blocked(task)
    assert ([1, 2], [3, 4, 5]) == (mem_seqs(stream), spooled_seqs(journal))
    sent: list[tuple[int, bytes]] = []
    while not task.done():
        sent += send_and_ack_all(stream)
        await asyncio.sleep(0)
    assert await finishes(task)
    sent += send_and_ack_all(stream)
    assert [(n, rec(n)) for n in range(1, 9)] == sent
