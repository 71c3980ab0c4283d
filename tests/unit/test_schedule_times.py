"""When schedules run: cron checking, next occurrences in time zones, daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridgehead.control.schedules.times import ScheduleSpecError, check_cron, next_occurrence, utc_iso, zone

PARIS = zone("Europe/Paris")


def occurrences(cron: str, tz_name: str, start: datetime, count: int) -> list[str]:
    """The next ``count`` occurrences after ``start``, as local ISO 8601 times."""
    tz = zone(tz_name)
    out, moment = [], start
    for _ in range(count):
        moment = next_occurrence(check_cron(cron), tz, moment)
        out.append(moment.astimezone(tz).isoformat())
    return out


def test_every_five_minutes_in_utc_is_strictly_after_the_start() -> None:
    """*/5 from 10:05:00 exactly gives 10:10, not 10:05 again."""
    start = datetime(2025, 1, 15, 10, 5, tzinfo=UTC)
    assert ["2025-01-15T10:10:00+00:00", "2025-01-15T10:15:00+00:00"] == occurrences("*/5 * * * *", "UTC", start, 2)


def test_result_is_utc_and_formats_with_z() -> None:
    """next_occurrence answers in UTC, and utc_iso writes it with a Z."""
    moment = next_occurrence("0 9 * * *", PARIS, datetime(2025, 1, 15, 12, tzinfo=UTC))
    assert (UTC, "2025-01-16T08:00:00Z") == (moment.tzinfo, utc_iso(moment))


def test_names_ranges_lists_and_steps() -> None:
    """MON-FRI skips the weekend; a list of months with names; a stepped range."""
    friday_noon = datetime(2025, 1, 3, 12, tzinfo=UTC)
    assert [
        "2025-01-06T09:00:00+01:00",
        "2025-01-07T09:00:00+01:00",
    ] == occurrences("0 9 * * MON-FRI", "Europe/Paris", friday_noon, 2)
    assert ["2025-06-01T00:00:00+00:00", "2025-12-01T00:00:00+00:00"] == occurrences(
        "0 0 1 jun,DEC *", "UTC", friday_noon, 2
    )
    assert ["2025-01-03T13:00:00+00:00", "2025-01-03T13:20:00+00:00", "2025-01-03T13:40:00+00:00"] == occurrences(
        "0-40/20 13 * * *", "UTC", friday_noon, 3
    )


def test_timezone_decides_the_instant() -> None:
    """The same cron at 09:00 is a different instant in Paris and New York."""
    start = datetime(2025, 7, 1, tzinfo=UTC)
    paris = next_occurrence("0 9 * * *", PARIS, start)
    new_york = next_occurrence("0 9 * * *", zone("America/New_York"), start)
    assert ("2025-07-01T07:00:00Z", "2025-07-01T13:00:00Z") == (utc_iso(paris), utc_iso(new_york))


def test_spring_forward_moves_a_missing_local_time_to_the_end_of_the_gap() -> None:
    """02:30 does not exist in Paris on 2025-03-30: that day's run is at 03:00 CEST, once."""
    assert [
        "2025-03-29T02:30:00+01:00",
        "2025-03-30T03:00:00+02:00",
        "2025-03-31T02:30:00+02:00",
    ] == occurrences("30 2 * * *", "Europe/Paris", datetime(2025, 3, 28, 12, tzinfo=UTC), 3)


def test_fall_back_runs_a_fixed_time_once() -> None:
    """02:30 happens twice in Paris on 2025-10-26: the run is at the first (CEST) only."""
    assert [
        "2025-10-26T02:30:00+02:00",
        "2025-10-27T02:30:00+01:00",
    ] == occurrences("30 2 * * *", "Europe/Paris", datetime(2025, 10, 25, 12, tzinfo=UTC), 2)


def test_fall_back_runs_an_interval_through_real_time() -> None:
    """*/30 keeps a 30-minute pace through the repeated hour: 02:00 and 02:30 happen twice."""
    assert [
        "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:30:00+02:00",
        "2025-10-26T02:00:00+01:00",
        "2025-10-26T02:30:00+01:00",
        "2025-10-26T03:00:00+01:00",
    ] == occurrences("*/30 * * * *", "Europe/Paris", datetime(2025, 10, 25, 23, 45, tzinfo=UTC), 5)


def test_normalises_whitespace() -> None:
    """Extra spaces between fields are accepted and dropped."""
    assert "*/5 * * * *" == check_cron("  */5   *  * * * ")


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("* * * *", "has 4 fields; it needs 5"),
        ("0 * * * * *", "has 6 fields; it needs 5"),
        ("@daily", "has 1 field; it needs 5"),
        ("61 * * * *", "cron field 1 (minute) '61': 61 is out of range 0-59"),
        ("* 24 * * *", "cron field 2 (hour) '24': 24 is out of range 0-23"),
        ("* * 0 * *", "cron field 3 (day-of-month) '0': 0 is out of range 1-31"),
        ("* * * FOO *", "cron field 4 (month) 'FOO': 'FOO' is not one of JAN"),
        ("* * * * MON-XYZ", "cron field 5 (day-of-week) 'MON-XYZ': 'XYZ' is not one of SUN"),
        ("* * * * 8", "cron field 5 (day-of-week) '8': 8 is out of range 0-7"),
        ("5-1 * * * *", "cron field 1 (minute) '5-1': range '5-1' runs backwards"),
        ("*/0 * * * *", "cron field 1 (minute) '*/0': step 0 is out of range 1-59"),
        ("1,,2 * * * *", "cron field 1 (minute) '1,,2': '' is not '*', a value"),
        ("MON * * * *", "cron field 1 (minute) 'MON': 'MON' is not a number"),
        ("0 0 * * 1#2", "cron field 5 (day-of-week) '1#2'"),
        ("0 0 30 2 *", "cron field 3 (day-of-month) '30': no such day in month field '2'"),
    ],
)
def test_bad_cron_names_the_field(cron: str, message: str) -> None:
    """Each malformed expression is refused with a message that names the field and term."""
    with pytest.raises(ScheduleSpecError) as caught:
        check_cron(cron)
    assert "cron" == caught.value.field
    assert message in caught.value.message, caught.value.message


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "/etc/localtime", "localtime", "", "Europe/"])
def test_bad_timezone_is_refused_clearly(name: str) -> None:
    """Names that are not IANA zones, and paths dressed as names, are refused."""
    with pytest.raises(ScheduleSpecError) as caught:
        zone(name)
    assert ("timezone", f"timezone {name!r} is not an IANA time zone name") == (
        caught.value.field,
        caught.value.message.split(" (")[0],
    )


def test_good_timezones() -> None:
    """IANA names, UTC included, give zones."""
    assert ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires"] == [
        zone(n).key for n in ("UTC", "Europe/Paris", "America/Argentina/Buenos_Aires")
    ]
