"""Periodic schedule types, as `celery.schedules`, and their QStash cron form (pure).

QStash schedules are 5-field cron strings (minute granularity), optionally prefixed with
`CRON_TZ=<zone>`. Celery's `crontab` takes its fields in another order than a cron string, and
ANDs day_of_month with day_of_week where cron ORs them, so that combination is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from croniter import croniter  # type: ignore[import-untyped]

from flask_app.shim.exceptions import UnsupportedOption

_ANY = "*"


def _field(value: Any) -> str:
    if isinstance(value, str):
        return value.strip().replace(" ", "")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Iterable):
        return ",".join(str(v) for v in sorted(value))
    raise ValueError(f"crontab field must be an int, a set of ints or a string, not {value!r}")


class crontab:  # noqa: N801 - Celery's name
    """A cron-like schedule; positional order is minute, hour, day_of_week, day_of_month, month."""

    def __init__(
        self,
        minute: Any = _ANY,
        hour: Any = _ANY,
        day_of_week: Any = _ANY,
        day_of_month: Any = _ANY,
        month_of_year: Any = _ANY,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("nowfun") is not None or kwargs.get("app") is not None:
            raise UnsupportedOption("crontab(nowfun=..., app=...) is not supported by the shim")
        self.minute = _field(minute)
        self.hour = _field(hour)
        self.day_of_week = _field(day_of_week)
        self.day_of_month = _field(day_of_month)
        self.month_of_year = _field(month_of_year)
        if not croniter.is_valid(self._expr()):
            raise ValueError(f"invalid crontab fields: {self._expr()!r}")

    @classmethod
    def from_string(cls, cronspec: str) -> crontab:
        """Build from a cron string in cron's order: 'm h dom mon dow'."""
        parts = cronspec.split()
        if len(parts) != 5:
            raise ValueError(f"a cron string has 5 fields, not {len(parts)}: {cronspec!r}")
        minute, hour, dom, month, dow = parts
        return cls(minute, hour, day_of_week=dow, day_of_month=dom, month_of_year=month)

    def _expr(self) -> str:
        return (
            f"{self.minute} {self.hour} {self.day_of_month} {self.month_of_year} {self.day_of_week}"
        )

    def to_cron(self) -> str:
        """The 5-field cron string in cron's order.

        Raises:
            UnsupportedOption: both day_of_week and day_of_month are restricted (Celery ANDs them,
            cron ORs them).
        """
        if self.day_of_week != _ANY and self.day_of_month != _ANY:
            raise UnsupportedOption(
                "crontab with both day_of_week and day_of_month restricted: Celery requires both "
                "to match, cron (QStash) accepts either, so the shim refuses to guess"
            )
        return self._expr()

    def next_run(self, after: datetime) -> datetime:
        """The first run strictly after `after` (in after's timezone), per cron rules."""
        nxt: datetime = croniter(self._expr(), after).get_next(datetime)
        return nxt

    def __repr__(self) -> str:
        return (
            f"<crontab: {self.minute} {self.hour} {self.day_of_week} {self.day_of_month} "
            f"{self.month_of_year} (m/h/dow/dom/moy)>"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and self._expr() == other._expr()

    def __hash__(self) -> int:
        return hash(self._expr())


class schedule:  # noqa: N801 - Celery's name
    """An interval schedule (`run_every` seconds or a timedelta)."""

    def __init__(self, run_every: float | timedelta, relative: bool = False, **kwargs: Any) -> None:
        if kwargs.get("nowfun") is not None or kwargs.get("app") is not None:
            raise UnsupportedOption("schedule(nowfun=..., app=...) is not supported by the shim")
        self.run_every = (
            run_every if isinstance(run_every, timedelta) else timedelta(seconds=run_every)
        )
        self.relative = relative

    @property
    def seconds(self) -> float:
        """The interval in seconds."""
        return self.run_every.total_seconds()

    def to_cron(self) -> str:
        """The cron string for an interval that divides an hour or a day evenly.

        Raises:
            UnsupportedOption: any other interval (cron cannot express it).
        """
        return interval_to_cron(self.seconds)

    def __repr__(self) -> str:
        return f"<freq: {self.run_every}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, schedule) and self.run_every == other.run_every

    def __hash__(self) -> int:
        return hash(self.run_every)


def interval_to_cron(seconds: float) -> str:
    """'*/m * * * *' or '0 */h * * *' for intervals that divide an hour or a day.

    Raises:
        UnsupportedOption: sub-minute or uneven intervals.
    """
    refuse = UnsupportedOption(
        f"interval of {seconds:g}s has no cron form: QStash schedules need whole minutes that "
        "divide an hour, or whole hours that divide a day"
    )
    if seconds <= 0 or seconds % 60:
        raise refuse
    minutes = int(seconds // 60)
    if minutes < 60 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    if minutes % 60 == 0:
        hours = minutes // 60
        if hours == 24:
            return "0 0 * * *"
        if hours < 24 and 24 % hours == 0:
            return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    raise refuse


def to_cron(value: Any, timezone: str | None = None) -> str:
    """QStash cron string for a beat entry's `schedule` value (number, timedelta, crontab...).

    Raises:
        UnsupportedOption: a schedule type or value QStash cannot express.
    """
    if isinstance(value, crontab | schedule):
        expr = value.to_cron()
    elif isinstance(value, timedelta):
        expr = interval_to_cron(value.total_seconds())
    elif isinstance(value, int | float) and not isinstance(value, bool):
        expr = interval_to_cron(float(value))
    else:
        raise UnsupportedOption(f"unsupported schedule {value!r} (solar and custom: not supported)")
    if timezone and timezone.upper() not in ("UTC", "ETC/UTC"):
        return f"CRON_TZ={timezone} {expr}"
    return expr


def solar(*args: Any, **kwargs: Any) -> Any:
    """Celery's solar schedule: not available over QStash.

    Raises:
        UnsupportedOption: always.
    """
    raise UnsupportedOption("solar schedules are not supported by the shim")
