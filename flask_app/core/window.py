"""When a class's booking window opens, computed the way the box computes it (pure, DST-aware).

AimHarder boxes configure the window per box (reference/aimharder-and-cron.md §1.7): bookings
open N days, or H hours, before the class. The original project computed the opening from the
class start in the box's IANA time zone: N *calendar days* earlier at the same wall-clock time,
so across a DST change the opening moves by an hour in UTC (class 28 Oct 08:00 Madrid, UTC+1,
N = 4 → 24 Oct 08:00 Madrid, UTC+2, = 06:00 UTC). Hours are elapsed hours, taken after the days.

A wall-clock time the change skipped (02:30 on the last Sunday of March in Madrid) is read with
the offset in force before the gap, i.e. as the same time after it (03:30 CEST), as PHP and
PEP 495 (`fold=0`) do; an ambiguous one (02:30 on the last Sunday of October) is its first
occurrence (CEST).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

DEFAULT_ZONE = "Europe/Madrid"
#: A given available_at and the one the rule computes may differ by rounding, not more.
AGREEMENT = timedelta(seconds=1)


class WindowError(ValueError):
    """The class start, zone, rule or available_at given cannot make a window; names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class Rule:
    """The box's rule: the window opens `days_before` calendar days, then `hours_before`
    elapsed hours, before the class starts."""

    days_before: int | None = None
    hours_before: int | None = None

    @property
    def is_given(self) -> bool:
        return self.days_before is not None or self.hours_before is not None


NO_RULE = Rule()


@dataclass(frozen=True)
class Window:
    """A prebooking's opening instant and, when known, the class it opens."""

    available_at: datetime
    class_start: datetime | None = None
    box_timezone: str | None = None


@cache
def known_zones() -> frozenset[str]:
    """Every IANA zone name this machine knows (the tzdata package pins them)."""
    return frozenset(available_timezones())


def is_known_zone(name: str) -> bool:
    """True for an IANA zone name (never a path: only names from the database are accepted)."""
    return name in known_zones()


def opening(class_start: datetime, zone: str, rule: Rule) -> datetime:
    """The instant (aware UTC) the rule opens the window of a class starting at `class_start`."""
    tz = ZoneInfo(zone)
    local = class_start.astimezone(tz)
    day = local.date() - timedelta(days=rule.days_before or 0)
    # Same wall-clock time on an earlier calendar day: a fresh datetime (fold=0), not arithmetic
    # on the aware one (which would keep the class day's UTC offset).
    wall = datetime.combine(day, local.time().replace(fold=0), tzinfo=tz)
    return wall.astimezone(UTC) - timedelta(hours=rule.hours_before or 0)


def local_day(moment: datetime, zone: str) -> str:
    """The calendar day (YYYYMMDD) of an instant in the zone."""
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y%m%d")


def resolve(
    *,
    day: str,
    now: datetime,
    available_at: datetime | None = None,
    class_start: datetime | None = None,
    zone: str = DEFAULT_ZONE,
    rule: Rule = NO_RULE,
) -> Window:
    """The window of a prebooking from what its creator gave.

    Either `available_at`, or `class_start` with a rule (or both, if they agree). With a class
    start, `day` (booking_data.day) must be its local date in `zone`.

    Raises:
        WindowError: naming the field that is missing, inconsistent or in the past.
    """
    if class_start is None:
        if rule.is_given:
            field = "opens_days_before" if rule.days_before is not None else "opens_hours_before"
            raise WindowError(field, "a window rule needs class_start")
        if available_at is None:
            raise WindowError(
                "available_at",
                "give available_at, or class_start with opens_days_before and/or "
                "opens_hours_before",
            )
        return Window(available_at)
    _check_class(class_start, zone, day, now)
    return Window(_opening_of(class_start, zone, rule, available_at), class_start, zone)


def _check_class(class_start: datetime, zone: str, day: str, now: datetime) -> None:
    if class_start <= now:
        raise WindowError("class_start", f"the class started already ({class_start.isoformat()})")
    local = local_day(class_start, zone)
    if local != day:
        raise WindowError(
            "booking_data.day",
            f"is {day} but class_start is on {_pretty(local)} in {zone} ({_pretty(day)} given)",
        )


def _opening_of(
    class_start: datetime, zone: str, rule: Rule, available_at: datetime | None
) -> datetime:
    if not rule.is_given:
        if available_at is None:
            raise WindowError(
                "opens_days_before",
                "class_start needs the box's rule (opens_days_before and/or opens_hours_before) "
                "or available_at",
            )
        if available_at > class_start:
            raise WindowError("available_at", "the window cannot open after the class starts")
        return available_at
    computed = opening(class_start, zone, rule)
    if available_at is not None and abs(available_at - computed) > AGREEMENT:
        raise WindowError(
            "available_at",
            f"{available_at.isoformat()} disagrees with the rule, which opens the window at "
            f"{computed.isoformat()}; give one or the other",
        )
    return computed


def _pretty(day: str) -> str:
    return date(int(day[:4]), int(day[4:6]), int(day[6:])).isoformat()
