"""Cron schedules as a CronJob's ``spec.schedule`` means them: parse, next time, missed times.

What lives here: the parser for the schedules Kubernetes accepts (robfig/cron
v3's ``ParseStandard``: five fields ``minute hour day-of-month month
day-of-week`` with lists, ranges, steps, JAN-DEC / SUN-SAT names and ``?``, the
``@yearly`` ... ``@hourly`` descriptors and ``@every <duration>``), and the
pure time arithmetic the CronJob controller needs (``next_after``,
``missed_between``) in an IANA time zone.

What must not: any clock (times are parameters), any Job logic.

Upstream facts this follows (robfig/cron v3, kube-apiserver validation):

* day-of-week is 0-6 (Sunday = 0); 7 is refused ("above maximum (6)"), as
  robfig's bounds refuse it.
* When day-of-month and day-of-week are both restricted (neither written as
  ``*`` / ``?``), a day matches if *either* matches (Vixie cron's OR); a field
  written ``*/n`` with n > 1 counts as restricted, as in robfig.
* ``TZ=`` / ``CRON_TZ=`` in the schedule are refused: "use timeZone field
  instead" (kube-apiserver refuses any schedule containing "TZ").
* A schedule with no match within five years (``0 0 30 2 *``) has no next
  time (robfig returns the zero time).

Where we choose (robfig differs): times are searched in wall-clock time of
the zone; a wall time that does not exist (spring forward) is skipped, and a
wall time that happens twice (fall back) runs once, at its first occurrence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CRON_FIELD_COUNT = 5  # minute hour dom month dow: robfig's ParseStandard
SEARCH_YEARS = 5  # robfig/cron gives up after five years without a match
MAX_DST_SHIFT = timedelta(hours=2)  # largest UTC-offset jump in tzdata (Antarctica/Troll)
MINUTE = timedelta(minutes=1)

_MONTH_NAMES = {n: i + 1 for i, n in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}  # fmt: skip
_DOW_NAMES = {n: i for i, n in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTH_NAMES),
    ("day-of-week", 0, 6, _DOW_NAMES),
)
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_GO_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
             "m": 60.0, "h": 3600.0}  # fmt: skip


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A five-field schedule as sets of allowed values."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    dom_star: bool
    dow_star: bool

    def day_matches(self, day: datetime) -> bool:
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow


@dataclass(frozen=True, slots=True)
class EverySpec:
    """``@every <duration>``: a constant delay, whole seconds, at least one."""

    seconds: int


Schedule = CronSpec | EverySpec


def parse_schedule(text: str) -> Schedule:
    """Parse a CronJob ``spec.schedule``; ValueError names the field and the problem."""
    spec = text.strip()
    if not spec:
        raise ValueError("schedule: empty spec string")
    if "TZ" in spec:
        raise ValueError("schedule: cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
    if spec.startswith("@"):
        if spec.startswith("@every "):
            return EverySpec(max(1, int(_go_duration(spec[len("@every "):]))))
        if spec in _DESCRIPTORS:
            spec = _DESCRIPTORS[spec]
        else:
            raise ValueError(f"schedule: unrecognized descriptor: {spec}")
    fields = spec.split()
    if len(fields) != CRON_FIELD_COUNT:
        raise ValueError(f"schedule: expected exactly {CRON_FIELD_COUNT} fields, "
                         f"found {len(fields)}: {spec}")  # fmt: skip
    parsed = [_parse_field(f, *_FIELDS[i]) for i, f in enumerate(fields)]
    return CronSpec(parsed[0][0], parsed[1][0], parsed[2][0], parsed[3][0], parsed[4][0],
                    dom_star=parsed[2][1], dow_star=parsed[4][1])  # fmt: skip


def _parse_field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    star = False
    for part in text.split(","):
        got, part_star = _parse_range(part, name, low, high, names)
        values |= got
        star = star or part_star
    return frozenset(values), star


def _parse_range(expr: str, name: str, low: int, high: int, names: dict[str, int]) -> tuple[set[int], bool]:
    range_step = expr.split("/")
    if len(range_step) > 2:
        raise ValueError(f"schedule: {name}: too many slashes: {expr}")
    bounds = range_step[0].split("-")
    star = False
    if bounds[0] in ("*", "?") and len(bounds) == 1:
        start, end, star = low, high, True
    elif len(bounds) == 1:
        start = end = _value(bounds[0], name, names)
    elif len(bounds) == 2:
        start, end = _value(bounds[0], name, names), _value(bounds[1], name, names)
    else:
        raise ValueError(f"schedule: {name}: too many hyphens: {expr}")
    step = 1
    if len(range_step) == 2:
        step = _number(range_step[1], name)
        if step <= 0:
            raise ValueError(f"schedule: {name}: step of range should be a positive number: {expr}")
        if len(bounds) == 1 and not star:
            end = high  # "5/15" means 5-max/15, as robfig reads it
        if step > 1:
            star = False
    if start < low:
        raise ValueError(f"schedule: {name}: beginning of range ({start}) below minimum ({low}): {expr}")
    if end > high:
        raise ValueError(f"schedule: {name}: end of range ({end}) above maximum ({high}): {expr}")
    if start > end:
        raise ValueError(f"schedule: {name}: beginning of range ({start}) beyond end of range ({end}): {expr}")
    return set(range(start, end + 1, step)), star


def _value(text: str, name: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    return _number(text, name)


def _number(text: str, name: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"schedule: {name}: failed to parse int from {text!r}")
    return int(text)


def _go_duration(text: str) -> float:
    """Seconds in a Go ``time.ParseDuration`` string ("1h30m", "90s", "1.5h")."""
    raw = text.strip()
    sign = -1.0 if raw.startswith("-") else 1.0
    body = raw.lstrip("+-")
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(body):
        m = _GO_DURATION_PART.match(body, pos)
        if m is None or m.group(1) in ("", "."):
            raise ValueError(f"schedule: failed to parse duration {raw}: invalid duration {raw!r}")
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if not body:
        raise ValueError(f"schedule: failed to parse duration {raw}: invalid duration {raw!r}")
    return sign * total


def zone(name: str | None) -> tzinfo:
    """The IANA zone of ``spec.timeZone`` (None: UTC); ValueError names the field."""
    if name is None or name in ("", "UTC", "Etc/UTC"):
        return UTC
    if name == "Local" or name.startswith("/") or ".." in name:
        raise ValueError(f"timeZone: unknown time zone {name}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"timeZone: unknown time zone {name}") from exc


# --- wall-clock search -------------------------------------------------------


def _next_wall(spec: CronSpec, w: datetime) -> datetime | None:
    """The first naive wall minute >= ``w`` matching ``spec`` (None beyond SEARCH_YEARS)."""
    limit = w.year + SEARCH_YEARS
    while w.year <= limit:
        if w.month not in spec.months:
            w = (w.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
        elif not spec.day_matches(w):
            w = w.replace(hour=0, minute=0) + timedelta(days=1)
        elif w.hour not in spec.hours:
            w = w.replace(minute=0) + timedelta(hours=1)
        elif w.minute not in spec.minutes:
            later = [m for m in spec.minutes if m > w.minute]
            w = w.replace(minute=min(later)) if later else w.replace(minute=0) + timedelta(hours=1)
        else:
            return w
    return None


def _prev_wall(spec: CronSpec, w: datetime) -> datetime | None:
    """The last naive wall minute <= ``w`` matching ``spec`` (None beyond SEARCH_YEARS)."""
    limit = w.year - SEARCH_YEARS
    while w.year >= limit:
        if w.month not in spec.months:
            w = w.replace(day=1, hour=0, minute=0) - MINUTE
        elif not spec.day_matches(w):
            w = w.replace(hour=0, minute=0) - MINUTE
        elif w.hour not in spec.hours:
            w = w.replace(minute=0) - MINUTE
        elif w.minute not in spec.minutes:
            earlier = [m for m in spec.minutes if m < w.minute]
            w = w.replace(minute=max(earlier)) if earlier else w.replace(minute=0) - MINUTE
        else:
            return w
    return None


def _instant(w: datetime, tz: tzinfo) -> datetime | None:
    """The aware instant of wall time ``w`` (first occurrence), or None if it does not exist."""
    aware = w.replace(tzinfo=tz, fold=0)
    back = aware.astimezone(UTC).astimezone(tz)
    if back.replace(tzinfo=None) != w:
        return None  # skipped by a spring-forward gap
    return aware


def next_after(schedule: Schedule, t: datetime, tz: tzinfo = UTC) -> datetime | None:
    """The first scheduled instant strictly after ``t`` (aware), in zone ``tz``; None if none."""
    if isinstance(schedule, EverySpec):
        return t.replace(microsecond=0) + timedelta(seconds=schedule.seconds)
    w: datetime | None = t.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0) + MINUTE
    while w is not None:
        w = _next_wall(schedule, w)
        if w is None:
            return None
        at = _instant(w, tz)
        if at is not None and at > t:
            return at.astimezone(t.tzinfo)
        w += MINUTE
    return None


def prev_at_or_before(schedule: CronSpec, t: datetime, tz: tzinfo = UTC) -> datetime | None:
    """The last scheduled instant at or before ``t`` (aware), in zone ``tz``; None if none."""
    # Start past any repeated hour: a first occurrence may lie after t's wall time.
    w: datetime | None = (t.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
                          + MAX_DST_SHIFT)  # fmt: skip
    while w is not None:
        w = _prev_wall(schedule, w)
        if w is None:
            return None
        at = _instant(w, tz)
        if at is not None and at <= t:
            return at.astimezone(t.tzinfo)
        w -= MINUTE
    return None


@dataclass(frozen=True, slots=True)
class Missed:
    """Scheduled times in (earliest, now]: the most recent one and how many there were.

    ``count`` is exact up to ``limit + 1``; beyond that it says "more than limit"."""

    most_recent: datetime | None
    count: int


def missed_between(schedule: Schedule, earliest: datetime, now: datetime, limit: int,
                   tz: tzinfo = UTC) -> Missed:  # fmt: skip
    """Scheduled times after ``earliest`` and at or before ``now`` (both aware)."""
    first = next_after(schedule, earliest, tz)
    if first is None or first > now:
        return Missed(None, 0)
    if isinstance(schedule, EverySpec):
        count = int((now - first).total_seconds()) // schedule.seconds + 1
        return Missed(first + timedelta(seconds=(count - 1) * schedule.seconds), count)
    count, t = 1, first
    while count <= limit:
        nxt = next_after(schedule, t, tz)
        if nxt is None or nxt > now:
            return Missed(t, count)
        count, t = count + 1, nxt
    return Missed(prev_at_or_before(schedule, now, tz), count)
