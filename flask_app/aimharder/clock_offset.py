"""How far a box host's clock is from ours, from observations that bound it (pure: no I/O).

The quantity estimated is the *offset* θ of one request: what the gym's clock reads when our
request reaches it, minus what our clock read when the request left. It is the clock offset
plus the one-way delay, which is exactly what firing needs: a request sent at our instant t
reaches the gym when its clock reads t + θ, so it is never early if t ≥ opening − θ_low.

Every observation bounds θ:

- a `Date` header (whole seconds, floored) D on an answer to a request sent at s and answered
  at r (our clock): the host stamped it between the two, so θ ∈ [D − r, D + 1 s − s]. One probe
  pins θ to about a second; a probe timed so that the gym's second boundary falls inside the
  current interval halves it (htpdate's technique). The upper side is tight, the lower side is
  loose by the round trip: the interval narrows to about one RTT.
- a `-12` too-early answer to a request sent at s for a class opening (gym clock) at o: the
  gym's clock read less than o on arrival, so θ < o − s.
- an accepted booking sent at s for a class opening at o: θ ≥ o − s.

Clocks drift, so a bound observed a while ago is widened by `drift_ppm` × its age. `Date`
bounds that contradict the others (machines behind a load balancer that disagree, a clock step)
are outvoted: the interval most of them agree on is kept (Marzullo's algorithm). The answers to
bookings come from the clock that actually decides, so they win over the `Date` headers: they
narrow the interval when they agree with it, and move it (keeping its width) when they do not.
They are only as right as the opening they were judged against, i.e. our window maths.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

SECOND = timedelta(seconds=1)
_US = timedelta(microseconds=1)
_UNBOUNDED = 10**15  # µs, about 31 years: stands for "no bound on this side"


@dataclass(frozen=True)
class Bound:
    """One observation: θ lies in [low, high] (None: no bound on that side), seen `at`."""

    low: timedelta | None
    high: timedelta | None
    at: datetime
    source: str  # "date" | "too_early" | "accepted"


@dataclass(frozen=True)
class Estimate:
    """The offset interval most observations agree on."""

    low: timedelta
    high: timedelta
    agreeing: int  # observations consistent with [low, high]
    rejected: int  # observations that contradict it (outvoted)
    newest_at: datetime  # when the newest observation was made

    @property
    def offset(self) -> timedelta:
        """The midpoint: the best single guess."""
        return self.low + (self.high - self.low) / 2

    @property
    def width(self) -> timedelta:
        return self.high - self.low

    def fire_instant(self, opening_at: datetime, margin: timedelta) -> datetime:
        """When to send, on our clock, for the request to reach the gym at `opening_at` by its
        clock or after: never early while θ ≥ low; at most width + margin late."""
        return opening_at - self.low + margin

    def to_json(self) -> dict[str, float | int | str]:
        ms = timedelta(milliseconds=1)
        return {
            "offset_ms": self.offset / ms,
            "low_ms": self.low / ms,
            "high_ms": self.high / ms,
            "uncertainty_ms": self.width / 2 / ms,
            "agreeing": self.agreeing,
            "rejected": self.rejected,
            "newest_at": self.newest_at.isoformat(),
        }


def parse_http_date(header: str | None) -> datetime | None:
    """An HTTP `Date` header as an aware datetime; None when absent or unreadable."""
    if not header:
        return None
    try:
        stamped = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    return stamped if stamped.tzinfo is not None else None


def from_date(sent_at: datetime, received_at: datetime, server_date: datetime) -> Bound:
    """The bound a `Date` header gives (see the module docstring)."""
    return Bound(server_date - received_at, server_date + SECOND - sent_at, received_at, "date")


def from_too_early(sent_at: datetime, opening_at: datetime) -> Bound:
    """The bound a `-12` too-early answer gives: the gym's clock had not reached the opening."""
    return Bound(None, opening_at - sent_at, sent_at, "too_early")


def from_accepted(sent_at: datetime, opening_at: datetime) -> Bound:
    """The bound an accepted booking gives: the gym's clock had reached the opening."""
    return Bound(opening_at - sent_at, None, sent_at, "accepted")


def _us(value: timedelta | None, default: int) -> int:
    return default if value is None else value // _US


def _widened(bound: Bound, now: datetime, drift_ppm: float) -> tuple[int, int]:
    """The bound in µs, widened on each side by the drift its age allows."""
    age_us = max(0, (now - bound.at) // _US)
    slack = int(age_us * drift_ppm / 1e6)
    return _us(bound.low, -_UNBOUNDED) - slack, _us(bound.high, _UNBOUNDED) + slack


def agreed_interval(intervals: Iterable[tuple[int, int]]) -> tuple[int, int, int] | None:
    """Marzullo's algorithm: the interval covered by the most intervals, and by how many.

    Touching intervals count as overlapping. None for no intervals.
    """
    edges = sorted(edge for lo, hi in intervals for edge in ((lo, -1), (hi, 1)))
    best, count, found = 0, 0, None
    for i, (value, kind) in enumerate(edges):
        count -= kind
        if count > best:
            best, found = count, (value, edges[i + 1][0])
    return None if found is None else (found[0], found[1], best)


def _agreed(bounds: list[Bound], now: datetime, drift_ppm: float) -> tuple[int, int] | None:
    found = agreed_interval(_widened(b, now, drift_ppm) for b in bounds)
    return None if found is None else (found[0], found[1])


def _bounded(interval: tuple[int, int]) -> bool:
    return -_UNBOUNDED < interval[0] and interval[1] < _UNBOUNDED


def _combine(
    by_date: tuple[int, int] | None, by_answer: tuple[int, int] | None
) -> tuple[int, int] | None:
    """The `Date` interval, narrowed by the booking answers' bounds, or moved to respect them."""
    if by_date is None or by_answer is None:
        found = by_date or by_answer
        return found if found is not None and _bounded(found) else None
    low, high = max(by_date[0], by_answer[0]), min(by_date[1], by_answer[1])
    if low <= high:
        return low, high
    if _bounded(by_answer):
        return by_answer
    width = by_date[1] - by_date[0]
    if by_answer[1] < _UNBOUNDED:  # the gym answered too early: it is behind what Date said
        return by_answer[1] - width, by_answer[1]
    return by_answer[0], by_answer[0] + width


def estimate(bounds: Iterable[Bound], now: datetime, drift_ppm: float) -> Estimate | None:
    """The offset interval the observations support; None while it is unbounded on a side
    (no observation yet, or only too-early answers)."""
    kept = list(bounds)
    dates = [b for b in kept if b.source == "date"]
    answers = [b for b in kept if b.source != "date"]
    found = _combine(_agreed(dates, now, drift_ppm), _agreed(answers, now, drift_ppm))
    if found is None:
        return None
    low, high = found
    agreeing = sum(
        1 for lo, hi in (_widened(b, now, drift_ppm) for b in kept) if lo <= high and low <= hi
    )
    newest = max(b.at for b in kept)
    return Estimate(low * _US, high * _US, agreeing, len(kept) - agreeing, newest)


def next_probe_at(
    current: Estimate | None, now: datetime, earliest: timedelta, rtt: timedelta = timedelta(0)
) -> datetime:
    """When to send the next `Date` probe (no sooner than `earliest` from now) so the gym's
    next second boundary splits the current interval.

    The split is at low + (width + rtt) / 2: a header from before the boundary lowers the high
    end to it, one from after raises the low end to it minus the round trip, so either way the
    width becomes (width + rtt) / 2, and probes narrow it towards one round trip.
    """
    if current is None:
        return now + earliest
    middle = current.low + (current.width + rtt) / 2
    gym_then = now + earliest + middle
    boundary = gym_then.replace(microsecond=0)
    if boundary < gym_then:
        boundary += SECOND
    return boundary - middle
