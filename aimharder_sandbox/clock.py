"""The gym's own clock and its booking-window rule, as AimHarder applies them.

AimHarder decides with its own clock (reference/aimharder-and-cron.md §1.7), which need not agree
with ours. `GymClock` is this machine's clock plus a fixed offset plus, per request, a jitter
drawn uniformly from [-jitter, +jitter]: the sandbox's "now". Arrivals keep the kernel's receive
stamp (this machine's clock) as the measurement truth; what the gym's clock read is derived.

`opening_ns` is the gym's rule for when a class opens: the class start in the box's time zone,
N calendar days earlier at the same wall-clock time, then H hours earlier.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class ClockSettings:
    """How far the gym's clock is from ours: a fixed offset and a per-request jitter."""

    offset_ns: int = 0
    jitter_ns: int = 0
    seed: int | None = None

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "offset_ms": self.offset_ns / NS_PER_MS,
            "jitter_ms": self.jitter_ns / NS_PER_MS,
            "seed": self.seed,
        }


def settings_from_ms(
    offset_ms: float = 0.0, jitter_ms: float = 0.0, seed: int | None = None
) -> ClockSettings:
    """Settings from milliseconds (the CLI's and the admin API's unit).

    Raises:
        ValueError: a negative jitter.
    """
    if jitter_ms < 0:
        raise ValueError(f"clock jitter must not be negative, not {jitter_ms!r}")
    return ClockSettings(round(offset_ms * NS_PER_MS), round(jitter_ms * NS_PER_MS), seed)


class GymClock:
    """Our clock plus an offset plus jitter; thread-safe."""

    def __init__(self, settings: ClockSettings | None = None) -> None:
        self._lock = threading.Lock()
        self._settings = ClockSettings()
        self._rng = random.Random()
        self.configure(settings or ClockSettings())

    def configure(self, settings: ClockSettings) -> None:
        """Replace the offset and jitter (the jitter's draws restart from the seed)."""
        with self._lock:
            self._settings = settings
            self._rng = random.Random(settings.seed)

    @property
    def settings(self) -> ClockSettings:
        return self._settings

    def draw_skew_ns(self) -> int:
        """How far the gym's clock is ahead of ours for one request: offset plus a jitter draw."""
        with self._lock:
            jitter = self._settings.jitter_ns
            drawn = self._rng.randint(-jitter, jitter) if jitter else 0
            return self._settings.offset_ns + drawn

    def host_ns(self, gym_ns: int) -> int:
        """When our clock reads the instant at which the gym's clock (jitter aside) reads gym_ns."""
        return gym_ns - self._settings.offset_ns


def as_ns(moment: datetime) -> int:
    """An aware datetime as epoch nanoseconds (microsecond precision)."""
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1_000


def opening_ns(
    start: datetime, zone: str, days_before: int | None, hours_before: int | None
) -> int:
    """When a class starting at `start` opens for booking, by the gym's rule.

    The start is taken in the box's time zone; the window opens `days_before` calendar days
    earlier at the same wall-clock time (a time the DST change skipped reads as after the gap,
    an ambiguous one as its first occurrence), then `hours_before` elapsed hours earlier.

    Raises:
        ValueError: a naive start; zoneinfo.ZoneInfoNotFoundError: an unknown zone.
    """
    if start.tzinfo is None:
        raise ValueError("a class start needs a UTC offset")
    local = start.astimezone(ZoneInfo(zone))
    day = (local.date() - timedelta(days=days_before or 0)).isoformat()
    wall = datetime.fromisoformat(f"{day}T{local.time().isoformat()}").replace(tzinfo=local.tzinfo)
    return as_ns(wall.astimezone(UTC) - timedelta(hours=hours_before or 0))
