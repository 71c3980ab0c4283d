"""The in-memory store's schedules (the contract: ``store.schedules``)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Literal

from bridgehead.control.store.memory.state import MemoryWrites, copied
from bridgehead.control.store.rows import ScheduleRow, json_size


class ScheduleTables(MemoryWrites):
    async def add_schedule(self, schedule: ScheduleRow, limit: int) -> Literal["created", "exists", "full"]:
        kept = copied(schedule)

        def op() -> Literal["created", "exists", "full"]:
            if len(self.state.schedules) >= limit:
                return "full"
            if schedule.name in self.state.schedules:
                return "exists"
            self.state.schedules[schedule.name] = kept
            return "created"

        return await self._write(op)

    async def get_schedule(self, name: str) -> ScheduleRow | None:
        return copied(self.state.schedules.get(name))

    async def list_schedules(self, after: str = "", limit: int = -1, max_bytes: int | None = None) -> list[ScheduleRow]:
        out: list[ScheduleRow] = []
        size = 0
        for name in sorted(n for n in self.state.schedules if n > after):
            if 0 <= limit <= len(out):
                break
            out.append(copied(self.state.schedules[name]))
            size += json_size(out[-1].job)
            if max_bytes is not None and size >= max_bytes:
                break
        return out

    async def due_schedules(self, now: float) -> list[ScheduleRow]:
        due = [
            (s.next_run_at, s.name, s)
            for s in self.state.schedules.values()
            if s.enabled and s.next_run_at is not None and s.next_run_at <= now
        ]
        return [copied(s) for _at, _name, s in sorted(due, key=lambda d: d[:2])]

    async def next_schedule_at(self) -> float | None:
        times = [s.next_run_at for s in self.state.schedules.values() if s.enabled and s.next_run_at is not None]
        return min(times) if times else None

    async def delete_schedule(self, name: str) -> bool:
        def op() -> bool:
            self.state.schedule_claims.pop(name, None)
            return self.state.schedules.pop(name, None) is not None

        return await self._write(op)

    async def set_schedule_enabled(self, name: str, enabled: bool, next_run_at: float | None) -> bool:
        def op() -> bool:
            schedule = self.state.schedules.get(name)
            if schedule is None:
                return False
            schedule.enabled, schedule.next_run_at = enabled, next_run_at
            self.state.schedule_claims.pop(name, None)
            return True

        return await self._write(op)

    async def claim_schedule(self, name: str, occurrence: float, node: str, now: float, until: float) -> bool:
        def op() -> bool:
            schedule = self.state.schedules.get(name)
            holder, held_until = self.state.schedule_claims.get(name, (node, 0.0))
            if schedule is None or not schedule.enabled or schedule.next_run_at != occurrence:
                return False
            if holder != node and held_until >= now:
                return False
            self.state.schedule_claims[name] = (node, until)
            return True

        return await self._write(op)

    def _recordable(self, name: str, occurrence: float | None) -> ScheduleRow | None:
        schedule = self.state.schedules.get(name)
        if schedule is None or (occurrence is not None and schedule.next_run_at != occurrence):
            return None
        self.state.schedule_claims.pop(name, None)
        return schedule

    def record_schedule_run(
        self, name: str, job_id: str, now: float, next_run_at: float | None, occurrence: float | None = None
    ) -> Awaitable[bool]:
        def op() -> bool:
            schedule = self._recordable(name, occurrence)
            if schedule is None:
                return False
            schedule.last_job_id, schedule.last_run_at, schedule.next_run_at = job_id, now, next_run_at
            schedule.runs += 1
            schedule.last_error_code = schedule.last_error_message = None
            return True

        return self._write(op)

    def record_schedule_skip(
        self,
        name: str,
        next_run_at: float | None,
        overlap: bool,
        error: tuple[str, str] | None,
        occurrence: float | None = None,
    ) -> Awaitable[bool]:
        def op() -> bool:
            schedule = self._recordable(name, occurrence)
            if schedule is None:
                return False
            schedule.next_run_at = next_run_at
            schedule.skipped_overlaps += int(overlap)
            if error is not None:
                schedule.last_error_code, schedule.last_error_message = error
            return True

        return self._write(op)
