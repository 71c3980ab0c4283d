"""The store contract, schedules on several nodes: an occurrence is claimed by one node at a
time, and its run or skip is recorded once, whichever node records it."""

from __future__ import annotations

from bridgehead.control.store.base import ScheduleRow, Store

ME, OTHER = "node-a", "node-b"


async def due(store: Store, name: str = "s", at: float = 10.0) -> None:
    template = {"plugin": "sql", "params": {"q": name}}
    row = ScheduleRow(name, "*/5 * * * *", "UTC", template, enabled=True, next_run_at=at, created_at=1.0)
    assert "created" == await store.add_schedule(row, limit=10)


async def test_one_node_at_a_time_claims_an_occurrence(store: Store) -> None:
    await due(store)
    assert await store.claim_schedule("s", 10.0, ME, 11.0, 26.0)
    assert not await store.claim_schedule("s", 10.0, OTHER, 12.0, 27.0)
    assert await store.claim_schedule("s", 10.0, ME, 12.0, 27.0)  # its own, again
    assert await store.claim_schedule("s", 10.0, OTHER, 28.0, 43.0)  # lapsed: taken over


async def test_only_the_next_occurrence_of_an_enabled_schedule_is_claimed(store: Store) -> None:
    await due(store)
    assert not await store.claim_schedule("s", 5.0, ME, 11.0, 26.0)  # not the next one
    assert not await store.claim_schedule("nobody", 10.0, ME, 11.0, 26.0)
    assert await store.set_schedule_enabled("s", False, None)
    assert not await store.claim_schedule("s", 10.0, ME, 11.0, 26.0)
    assert await store.set_schedule_enabled("s", True, 20.0)
    assert await store.claim_schedule("s", 20.0, ME, 21.0, 36.0)
    assert await store.delete_schedule("s")
    assert not await store.claim_schedule("s", 20.0, ME, 21.0, 36.0)


async def test_an_occurrence_is_recorded_once(store: Store) -> None:
    """Two nodes recording the same occurrence (the second had claimed it after the first's
    claim lapsed): the first counts, the second changes nothing."""
    await due(store)
    assert await store.record_schedule_run("s", "j1", 11.0, 20.0, occurrence=10.0)
    assert not await store.record_schedule_run("s", "j1", 11.5, 20.0, occurrence=10.0)
    assert not await store.record_schedule_skip("s", 20.0, True, None, occurrence=10.0)
    assert await store.record_schedule_skip("s", 30.0, True, None, occurrence=20.0)
    assert not await store.record_schedule_skip("s", 30.0, True, None, occurrence=20.0)
    found = await store.get_schedule("s")
    assert found is not None
    assert (1, 1, "j1", 30.0) == (found.runs, found.skipped_overlaps, found.last_job_id, found.next_run_at)
    # A manual run names no occurrence: always recorded, the timetable left as it is.
    assert await store.record_schedule_run("s", "j2", 12.0, 30.0)
    assert not await store.record_schedule_run("nobody", "j3", 12.0, 30.0)


async def test_recording_an_occurrence_releases_its_claim(store: Store) -> None:
    await due(store)
    assert await store.claim_schedule("s", 10.0, ME, 11.0, 100.0)
    assert await store.record_schedule_run("s", "j1", 11.0, 20.0, occurrence=10.0)
    assert await store.claim_schedule("s", 20.0, OTHER, 21.0, 36.0)  # before ME's claim would lapse
