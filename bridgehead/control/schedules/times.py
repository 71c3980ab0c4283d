"""When a schedule's runs fall: 5-field cron expressions in an IANA time zone (pure, no I/O).

Expressions are checked here, field by field, so an error names the field and the term that
is wrong; cronsim (docs/choices.md) then computes occurrences, with its Debian-cron handling
of daylight-saving changes:

* a job at a fixed local time (minute and hour fields not starting with ``*``) whose time
  does not exist on a spring-forward day runs at the first minute after the gap; on a
  fall-back day it runs once, at the first of the two times (before the clocks go back);
* any other job steps through real time: a local time that does not exist is simply not
  reached, and an hour that happens twice is run twice (``*/30 * * * *`` runs at 02:00,
  02:30, 02:00, 02:30 when the clocks go back at 03:00).
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime

from cronsim import CronSim, CronSimError

FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))  # day-of-week: 0 and 7 are Sunday
_NAMES: dict[str, tuple[str, ...]] = {
    "month": ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
    "day-of-week": ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"),
}
# One comma-separated term: ``*``, ``V`` or ``V-V``, each with an optional ``/STEP``.
_TERM = re.compile(r"(?P<start>\*|[0-9]+|[A-Za-z]+)(?:-(?P<end>[0-9]+|[A-Za-z]+))?(?:/(?P<step>[0-9]+))?")
# Zone names as the IANA database spells them; keeps paths such as "../x" away from zoneinfo.
_ZONE = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")


class ScheduleSpecError(ValueError):
    """A cron expression or time zone that cannot be used; ``field`` is "cron" or "timezone"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check_cron(expr: str) -> str:
    """The expression normalised to single spaces; ``ScheduleSpecError`` names a bad field."""
    parts = expr.split()
    if len(parts) != 5:
        raise ScheduleSpecError(
            "cron",
            f"cron {expr!r} has {len(parts)} field{'s' if len(parts) != 1 else ''}; it needs 5: "
            "minute hour day-of-month month day-of-week "
            "(e.g. '*/5 * * * *'; seconds and macros such as @daily are not supported)",
        )
    for index, text in enumerate(parts):
        for term in text.split(","):
            _check_term(index, text, term)
    normalised = " ".join(parts)
    try:
        # Catches what needs the fields together, such as day 30 of February only.
        next(CronSim(normalised, datetime(2000, 1, 1, tzinfo=UTC)))
    except CronSimError:
        # The only combination the checks above let through: days no month named has.
        raise ScheduleSpecError(
            "cron", f"cron field 3 (day-of-month) {parts[2]!r}: no such day in month field {parts[3]!r}"
        ) from None
    except StopIteration:
        raise ScheduleSpecError("cron", f"cron {expr!r} never matches a time") from None
    return normalised


def _check_term(index: int, text: str, term: str) -> None:
    name = FIELDS[index]
    low, high = _BOUNDS[index]
    where = f"cron field {index + 1} ({name}) {text!r}"
    match = _TERM.fullmatch(term)
    if match is None:
        raise ScheduleSpecError(
            "cron", f"{where}: {term!r} is not '*', a value, a range 'A-B' or a list, each with an optional '/step'"
        )
    start, end, step = match.group("start", "end", "step")
    if start == "*" and end is not None:
        raise ScheduleSpecError("cron", f"{where}: '*' cannot start a range")
    values = [_value(where, name, low, high, v) for v in (start, end) if v is not None and v != "*"]
    if len(values) == 2 and values[0] > values[1]:
        raise ScheduleSpecError("cron", f"{where}: range {term!r} runs backwards")
    if step is not None and not 1 <= int(step) <= high:
        raise ScheduleSpecError("cron", f"{where}: step {step} is out of range 1-{high}")


def _value(where: str, name: str, low: int, high: int, text: str) -> int:
    if text.isdigit():
        value = int(text)
        if not low <= value <= high:
            raise ScheduleSpecError("cron", f"{where}: {value} is out of range {low}-{high}")
        return value
    names = _NAMES.get(name)
    if names is None:
        raise ScheduleSpecError("cron", f"{where}: {text!r} is not a number")
    if text.upper() not in names:
        raise ScheduleSpecError("cron", f"{where}: {text!r} is not one of {', '.join(names)}")
    return names.index(text.upper()) + (1 if name == "month" else 0)


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name`` (``ScheduleSpecError`` if there is none)."""
    problem = f"timezone {name!r} is not an IANA time zone name (such as 'Europe/Paris', 'America/New_York' or 'UTC')"
    # "localtime" is the host's own zone under another name: a schedule must not depend on it.
    if not _ZONE.fullmatch(name) or name == "localtime":
        raise ScheduleSpecError("timezone", problem)
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleSpecError("timezone", problem) from None


def next_occurrence(cron: str, tz: zoneinfo.ZoneInfo, after: datetime) -> datetime:
    """The first time strictly after ``after`` (aware) that ``cron`` matches in ``tz``, in UTC."""
    try:
        found = next(CronSim(cron, after.astimezone(tz)))
    except (CronSimError, StopIteration):
        # check_cron refused these at creation; reaching here means the expression changed under us.
        raise ScheduleSpecError("cron", f"cron {cron!r} has no occurrence after {after.isoformat()}") from None
    return found.astimezone(UTC)


def utc_iso(moment: datetime) -> str:
    """``2025-01-31T23:05:00Z``: the form of schedule times and of occurrence keys."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
