"""What ``/api/v1/schedules`` takes and shows: msgspec structs, no HTTP (the OpenAPI
description takes its schemas from here)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from bridgehead.control.services.requests import JobSubmit

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ScheduleName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
MAX_NAME = 128  # longer names are not looked up: NAME_PATTERN allows none


class ScheduleCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /api/v1/schedules``."""

    name: ScheduleName
    cron: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"
    # Exactly a POST /api/v1/jobs body, less idempotency_key (each run gets its own).
    job: JobSubmit
    enabled: bool = True


class SchedulePatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``PATCH /api/v1/schedules/{name}``: to change anything else, delete and create."""

    enabled: bool


class ScheduleError(msgspec.Struct):
    code: str
    message: str


class Schedule(msgspec.Struct):
    """The API's view of a schedule; times are ISO 8601, ``*_local`` in its time zone."""

    name: str
    cron: str
    timezone: str
    enabled: bool
    job: dict[str, Any]
    next_run_at: str | None
    next_run_at_local: str | None
    last_run_at: str | None
    last_job_id: str | None
    last_job_state: str | None
    runs: int
    skipped_overlaps: int
    last_error: ScheduleError | None
    created_at: str
