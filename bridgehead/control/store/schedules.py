"""The schedules part of the store contract: recurring schedules and their run state.

Several control planes may share a PostgreSQL database, each running a scheduler: a node
*claims* a due occurrence (``claim_schedule``) before it looks at the previous run and makes
the occurrence's job, so one node at a time handles it; and the run or skip is recorded for
that occurrence only while it is still the schedule's next one, so it is counted once whoever
records it. A claim lapses (its node died mid-way): another node then handles the occurrence
again, and the job's idempotency key hands back the job already made."""

from __future__ import annotations

import abc
from collections.abc import Awaitable
from typing import Literal

from bridgehead.control.store.rows import ScheduleRow


class ScheduleStore(abc.ABC):
    @abc.abstractmethod
    async def add_schedule(self, schedule: ScheduleRow, limit: int) -> Literal["created", "exists", "full"]:
        """Insert ``schedule``: "created", or "exists" (its name is taken), or "full" (``limit``
        schedules exist already: counted in the insert's transaction, so concurrent creations
        cannot pass it)."""

    @abc.abstractmethod
    async def get_schedule(self, name: str) -> ScheduleRow | None: ...

    @abc.abstractmethod
    async def list_schedules(self, after: str = "", limit: int = -1, max_bytes: int | None = None) -> list[ScheduleRow]:
        """By name, after ``after``; at most ``limit`` (-1: all), stopping once their job
        templates (``json_size``) reach ``max_bytes`` (at least one)."""

    @abc.abstractmethod
    async def due_schedules(self, now: float) -> list[ScheduleRow]:
        """Enabled schedules whose ``next_run_at`` is at or before ``now``, earliest first (then
        by name)."""

    @abc.abstractmethod
    async def next_schedule_at(self) -> float | None:
        """The earliest ``next_run_at`` of the enabled schedules."""

    @abc.abstractmethod
    async def delete_schedule(self, name: str) -> bool:
        """False if there was none."""

    @abc.abstractmethod
    async def set_schedule_enabled(self, name: str, enabled: bool, next_run_at: float | None) -> bool:
        """False if there is none."""

    @abc.abstractmethod
    async def claim_schedule(self, name: str, occurrence: float, node: str, now: float, until: float) -> bool:
        """Claim the handling of the occurrence due at ``occurrence`` for ``node``, to ``until``:
        True if the schedule is enabled, its ``next_run_at`` is still ``occurrence``, and no
        other node's claim runs past ``now``. Recording the occurrence, or a change of
        ``enabled``, releases the claim."""

    @abc.abstractmethod
    def record_schedule_run(
        self, name: str, job_id: str, now: float, next_run_at: float | None, occurrence: float | None = None
    ) -> Awaitable[bool]:
        """A run made job ``job_id``: count it, clear the last error, set the next occurrence.
        With ``occurrence`` (a run of the timetable), only while ``next_run_at`` is still that
        occurrence; False, and nothing written, if it is not (recorded already), or if there
        is no such schedule."""

    @abc.abstractmethod
    def record_schedule_skip(
        self,
        name: str,
        next_run_at: float | None,
        overlap: bool,
        error: tuple[str, str] | None,
        occurrence: float | None = None,
    ) -> Awaitable[bool]:
        """A due run made no job, because the previous run is still going (``overlap``: counted)
        or because of ``error`` (code, message: kept); move on to ``next_run_at``. With
        ``occurrence``, as ``record_schedule_run``: once."""
