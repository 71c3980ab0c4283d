"""The store contract, schedules: creation within a limit, due order, runs and skips."""

from __future__ import annotations

from bridgehead.control.store.base import ScheduleRow, Store


def schedule(name: str, next_run_at: float | None, enabled: bool = True, job: object = None) -> ScheduleRow:
    template = {"plugin": "sql", "params": {"q": job or name}}
    return ScheduleRow(name, "0 2 * * *", "UTC", template, enabled=enabled, next_run_at=next_run_at, created_at=1.0)


async def test_a_schedule_is_created_once_and_within_the_limit(store: Store) -> None:
    assert "created" == await store.add_schedule(schedule("a", 5.0), limit=2)
    assert "exists" == await store.add_schedule(schedule("a", 6.0), limit=2)
    assert "created" == await store.add_schedule(schedule("b", 5.0), limit=2)
    assert "full" == await store.add_schedule(schedule("c", 5.0), limit=2)
    found = await store.get_schedule("a")
    assert found is not None and (5.0, {"plugin": "sql", "params": {"q": "a"}}) == (found.next_run_at, found.job)
    assert await store.get_schedule("c") is None


async def test_schedules_page_by_name_up_to_a_byte_cap(store: Store) -> None:
    for name in ("c", "a", "b"):
        await store.add_schedule(schedule(name, 5.0, job="x" * 100), limit=10)
    assert ["a", "b", "c"] == [s.name for s in await store.list_schedules()]
    assert ["b"] == [s.name for s in await store.list_schedules(after="a", limit=1)]
    assert ["a"] == [s.name for s in await store.list_schedules(max_bytes=10)]  # at least one


async def test_due_schedules_come_earliest_first(store: Store) -> None:
    await store.add_schedule(schedule("late", 30.0), limit=10)
    await store.add_schedule(schedule("b", 10.0), limit=10)
    await store.add_schedule(schedule("a", 10.0), limit=10)
    await store.add_schedule(schedule("off", 1.0, enabled=False), limit=10)
    assert ["a", "b"] == [s.name for s in await store.due_schedules(20.0)]
    assert 10.0 == await store.next_schedule_at()
    assert await store.set_schedule_enabled("off", True, 0.0)
    assert not await store.set_schedule_enabled("nobody", True, 0.0)
    assert ["off", "a", "b", "late"] == [s.name for s in await store.due_schedules(30.0)]
    assert 0.0 == await store.next_schedule_at()
    assert await store.delete_schedule("off")
    assert not await store.delete_schedule("off")
    assert 10.0 == await store.next_schedule_at()


async def test_no_enabled_schedule_means_no_next_time(store: Store) -> None:
    assert await store.next_schedule_at() is None
    await store.add_schedule(schedule("off", None, enabled=False), limit=10)
    assert await store.next_schedule_at() is None


async def test_runs_and_skips_are_counted(store: Store) -> None:
    await store.add_schedule(schedule("s", 10.0), limit=10)
    await store.record_schedule_skip("s", 20.0, overlap=False, error=("invalid_job", "no such plugin"))
    await store.record_schedule_skip("s", 30.0, overlap=True, error=None)
    found = await store.get_schedule("s")
    assert found is not None
    assert (30.0, 1, "invalid_job", "no such plugin", 0) == (
        found.next_run_at,
        found.skipped_overlaps,
        found.last_error_code,
        found.last_error_message,
        found.runs,
    )
    await store.record_schedule_run("s", "j1", 31.0, 40.0)
    found = await store.get_schedule("s")
    assert found is not None
    assert ("j1", 31.0, 40.0, 1, None, None) == (
        found.last_job_id,
        found.last_run_at,
        found.next_run_at,
        found.runs,
        found.last_error_code,
        found.last_error_message,
    )
