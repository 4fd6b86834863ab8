"""Cron schedules: parsing as robfig/cron's standard parser does, next times across DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshwork.core.cron import (
    CronSpec,
    EverySpec,
    missed_between,
    next_after,
    parse_schedule,
    prev_at_or_before,
    zone,
)

NY = "America/New_York"
BERLIN = "Europe/Berlin"

# (schedule, zone, after (wall time in zone), expected next (wall time in zone, UTC offset))
NEXT_CASES = [
    ("*/15 * * * *", None, "2024-01-01T10:07", "2024-01-01T10:15+00:00"),
    ("0 * * * *", None, "2024-01-01T10:00", "2024-01-01T11:00+00:00"),
    ("@hourly", None, "2024-01-01T23:30", "2024-01-02T00:00+00:00"),
    ("@daily", None, "2024-12-31T12:00", "2025-01-01T00:00+00:00"),
    ("@midnight", None, "2024-12-31T00:00", "2025-01-01T00:00+00:00"),
    ("@weekly", None, "2024-01-03T00:00", "2024-01-07T00:00+00:00"),  # next Sunday
    ("@monthly", None, "2024-01-31T00:00", "2024-02-01T00:00+00:00"),
    ("@yearly", None, "2024-06-01T00:00", "2025-01-01T00:00+00:00"),
    ("@annually", None, "2024-06-01T00:00", "2025-01-01T00:00+00:00"),
    ("0 0 31 * *", None, "2024-04-01T00:00", "2024-05-31T00:00+00:00"),  # April has no 31st
    ("0 0 29 2 *", None, "2025-01-01T00:00", "2028-02-29T00:00+00:00"),  # next leap day
    ("0 0 29 FEB *", None, "2024-02-28T00:00", "2024-02-29T00:00+00:00"),
    ("0 9 * * mon-fri", None, "2024-01-05T09:00", "2024-01-08T09:00+00:00"),  # Fri -> Mon
    ("0 9 * * SAT,sun", None, "2024-01-01T00:00", "2024-01-06T09:00+00:00"),
    ("0 0 13 * 5", None, "2024-01-01T00:00", "2024-01-05T00:00+00:00"),  # dom OR dow: Friday 5th
    ("0 0 13 * 5", None, "2024-01-12T00:00", "2024-01-13T00:00+00:00"),  # ... or the 13th
    ("0 0 13 * *", None, "2024-01-01T00:00", "2024-01-13T00:00+00:00"),
    ("0 0 ? * 1", None, "2024-01-01T00:00", "2024-01-08T00:00+00:00"),  # ? = *: dow only
    ("0 0 */10 * 1", None, "2024-01-01T00:00", "2024-01-08T00:00+00:00"),  # */10 restricts: OR
    ("5/20 * * * *", None, "2024-01-01T00:26", "2024-01-01T00:45+00:00"),  # 5-59/20
    ("10-20/5,50 3 * jan-mar *", None, "2024-03-31T03:50", "2025-01-01T03:10+00:00"),
    ("30 2 * * *", NY, "2024-03-09T03:00", "2024-03-11T02:30-04:00"),  # 2:30 does not exist 3/10
    ("*/30 * * * *", NY, "2024-03-10T01:30", "2024-03-10T03:00-04:00"),  # gap skipped
    ("30 1 * * *", NY, "2024-11-02T12:00", "2024-11-03T01:30-04:00"),  # first 1:30 (EDT)
    ("0 3 * * *", NY, "2024-11-03T00:00", "2024-11-03T03:00-05:00"),
    ("30 2 * * *", BERLIN, "2024-03-30T12:00", "2024-04-01T02:30+02:00"),  # 2:30 CET->CEST gap
    ("30 2 * * *", BERLIN, "2024-10-26T12:00", "2024-10-27T02:30+02:00"),  # first 2:30 (CEST)
    ("0 0 * * *", BERLIN, "2024-01-01T00:00", "2024-01-02T00:00+01:00"),
]


@pytest.mark.parametrize(("schedule", "tz_name", "after", "expected"), NEXT_CASES)
def test_next_after(schedule: str, tz_name: str | None, after: str, expected: str) -> None:
    tz = zone(tz_name)
    start = datetime.fromisoformat(after).replace(tzinfo=tz)
    got = next_after(parse_schedule(schedule), start, tz)
    assert got is not None
    assert got.isoformat(timespec="minutes") == expected


def test_repeated_hour_runs_once() -> None:
    tz = zone(NY)
    spec = parse_schedule("30 1 * * *")
    first = next_after(spec, datetime(2024, 11, 3, 0, 0, tzinfo=tz), tz)
    assert first is not None
    again = next_after(spec, first, tz)
    assert again is not None and again.astimezone(tz).isoformat() == "2024-11-04T01:30:00-05:00"
    every_15 = parse_schedule("*/15 * * * *")
    t = datetime(2024, 11, 3, 5, 0, tzinfo=UTC)  # 01:00 EDT
    seen = []
    for _ in range(6):
        nxt = next_after(every_15, t, tz)
        assert nxt is not None
        seen.append(nxt.astimezone(tz).strftime("%H:%M%z"))
        t = nxt
    assert seen == ["01:15-0400", "01:30-0400", "01:45-0400", "02:00-0500", "02:15-0500", "02:30-0500"]


def test_no_time_within_five_years() -> None:
    assert next_after(parse_schedule("0 0 30 2 *"), datetime(2024, 1, 1, tzinfo=UTC)) is None


def test_every_descriptor() -> None:
    spec = parse_schedule("@every 1h30m")
    assert spec == EverySpec(5400)
    t = datetime(2024, 1, 1, 0, 0, 10, 500, tzinfo=UTC)
    assert next_after(spec, t) == datetime(2024, 1, 1, 1, 30, 10, tzinfo=UTC)
    assert parse_schedule("@every 100ms") == EverySpec(1)


BAD = [
    ("", "empty spec string"),
    ("* * * *", "expected exactly 5 fields, found 4"),
    ("* * * * * *", "expected exactly 5 fields, found 6"),
    ("TZ=UTC * * * * *", "use timeZone field instead"),
    ("CRON_TZ=Europe/Berlin 0 * * * *", "use timeZone field instead"),
    ("@every", "unrecognized descriptor"),
    ("@every 5x", "failed to parse duration"),
    ("@fortnightly", "unrecognized descriptor: @fortnightly"),
    ("60 * * * *", "minute: end of range (60) above maximum (59)"),
    ("* 24 * * *", "hour: end of range (24) above maximum (23)"),
    ("* * 0 * *", "day-of-month: beginning of range (0) below minimum (1)"),
    ("* * * 13 *", "month: end of range (13) above maximum (12)"),
    ("* * * * 7", "day-of-week: end of range (7) above maximum (6)"),
    ("5-1 * * * *", "beginning of range (5) beyond end of range (1)"),
    ("*/0 * * * *", "step of range should be a positive number"),
    ("1/2/3 * * * *", "too many slashes"),
    ("1-2-3 * * * *", "too many hyphens"),
    ("a * * * *", "minute: failed to parse int"),
    ("* * * foo *", "month: failed to parse int"),
    ("-1 * * * *", "failed to parse int"),
]


@pytest.mark.parametrize(("schedule", "message"), BAD)
def test_bad_schedules(schedule: str, message: str) -> None:
    with pytest.raises(ValueError, match="schedule") as info:
        parse_schedule(schedule)
    assert message in str(info.value)


def test_unknown_zone() -> None:
    with pytest.raises(ValueError, match="timeZone: unknown time zone Mars/Olympus"):
        zone("Mars/Olympus")
    with pytest.raises(ValueError, match="timeZone"):
        zone("../etc/passwd")


def test_missed_between() -> None:
    spec = parse_schedule("0 * * * *")
    start = datetime(2024, 1, 1, 0, 30, tzinfo=UTC)
    missed = missed_between(spec, start, datetime(2024, 1, 1, 5, 0, tzinfo=UTC), 100)
    assert missed.count == 5
    assert missed.most_recent == datetime(2024, 1, 1, 5, 0, tzinfo=UTC)
    none = missed_between(spec, start, datetime(2024, 1, 1, 0, 59, tzinfo=UTC), 100)
    assert none.count == 0 and none.most_recent is None
    many = missed_between(parse_schedule("* * * * *"), start, start + timedelta(days=3), 100)
    assert many.count == 101  # "more than 100"
    assert many.most_recent == start + timedelta(days=3)
    every = missed_between(parse_schedule("@every 10m"), start, start + timedelta(hours=1, minutes=5), 100)
    assert every.count == 6 and every.most_recent == start + timedelta(hours=1)



@st.composite
def _schedules(draw: st.DrawFn) -> str:
    return " ".join([
        draw(st.sampled_from(["*/7", "0", "5,35", "10-40/10", "59"])),
        draw(st.sampled_from(["*", "*/5", "0", "1-3", "23"])),
        draw(st.sampled_from(["*", "?", "1", "15-20", "29,31", "*/3"])),
        draw(st.sampled_from(["*", "feb", "1-6", "*/2", "12"])),
        draw(st.sampled_from(["*", "?", "0", "mon-fri", "6"])),
    ])


def _matches(spec: CronSpec, wall: datetime) -> bool:
    return (wall.minute in spec.minutes and wall.hour in spec.hours and wall.month in spec.months
            and spec.day_matches(wall))  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(_schedules(), st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1)),
       st.sampled_from([None, NY, BERLIN, "Australia/Lord_Howe"]))  # fmt: skip
def test_next_after_is_the_first_matching_time(schedule: str, start: datetime, tz_name: str | None) -> None:
    spec = parse_schedule(schedule)
    assert isinstance(spec, CronSpec)
    tz = zone(tz_name)
    t = start.replace(tzinfo=tz)
    nxt = next_after(spec, t, tz)
    if nxt is None:
        return
    assert nxt > t
    wall = nxt.astimezone(tz).replace(tzinfo=None)
    assert _matches(spec, wall)
    # Nothing scheduled in between: the previous scheduled time is not after t.
    prev = prev_at_or_before(spec, nxt - timedelta(minutes=1), tz)
    assert prev is None or prev <= t
    assert prev_at_or_before(spec, nxt, tz) == nxt
