"""The gym's clock: when to send so a booking reaches AimHarder at its opening, by ITS clock.

AimHarder judges "too early" (`bookState -12`, `ERROR_ANTELACION_CLIENTE`) by its own clock
(reference/aimharder-and-cron.md §1.7). `GymClocks` keeps, per box host, an estimate of the
offset θ = (the gym's clock when our request arrives) − (our clock when it left), learned from
the host's HTTP `Date` headers (cheap `HEAD /` probes timed to straddle its second boundaries)
and from the `-12` answers and accepted bookings the firing path reports. The estimation is pure
(`flask_app.aimharder.clock_offset`); this module does the probing, caching and rate limiting.

API for the firing path (one instance per process, `get_gym_clocks(app)`; thread-safe):

    clocks = get_gym_clocks(app)
    fire_at = clocks.fire_instant(box, opening_at)
        # The instant on OUR clock at which to send a booking for `box` whose window opens at
        # `opening_at` (the gym's time, i.e. `available_at`): opening − θ_low + GYM_CLOCK_MARGIN_MS,
        # so never early while the estimate holds, and late by at most its width + the margin.
        # No fresh estimate (never probed, older than GYM_CLOCK_MAX_AGE_S, or only -12 bounds):
        # opening_at + margin (our clock taken as the gym's). Pure lookup: no I/O, no blocking.
    clocks.note_too_early(box, sent_at=result.sent_at, opening_at=opening_at)
        # Report a -12 ERROR_ANTELACION_CLIENTE* answer to a request that left at `sent_at`
        # (our clock): the gym read < opening on arrival, an upper bound. Call it before
        # re-sending; fire_instant then moves later if the estimate allowed an early send.
    clocks.note_accepted(box, sent_at=..., opening_at=...)
        # Optional: an accepted booking (booked/waitlisted/full...) sent at `sent_at` proves the
        # gym had reached the opening: a lower bound, which narrows later windows of the host.
    clocks.refresh(box)        # probe now (blocking, ~1 s per probe), rate-limited, cached
    clocks.estimate(box)       # the current Estimate (offset, low/high, uncertainty) or None

Probing ahead of windows: `flask_app.core.preflight.probe_clocks(app, now)` refreshes every box
whose window opens within GYM_CLOCK_LEAD_S. The background runner runs it every 30 s in every
process (job `gym-clocks`, in a thread of its own), since the estimate lives in the memory of
the process that fires (refresh() is rate-limited per host, so calling it often is cheap).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from flask import Flask, current_app

from flask_app.aimharder.client import DateProbe
from flask_app.aimharder.clock_offset import (
    Bound,
    Estimate,
    estimate,
    from_accepted,
    from_date,
    from_too_early,
    next_probe_at,
    parse_http_date,
)
from flask_app.timing import Clock

log = logging.getLogger(__name__)

_EXT = "gym_clocks"
#: Stop probing a host once its interval is this narrow (the RTT usually stops it earlier).
TARGET_WIDTH = timedelta(milliseconds=1)
#: A probe is never scheduled sooner than this (time to wake up and send).
PROBE_SETUP = timedelta(milliseconds=50)
#: Observations kept per host (oldest dropped first).
MAX_BOUNDS = 64
#: Hosts probed at once by refresh_due.
PARALLEL_HOSTS = 8


@runtime_checkable
class DateSource(Protocol):
    """Where probes go: the AimHarder client (`probe_date`, `host_of`)."""

    def probe_date(self, box: str) -> DateProbe | None: ...

    def host_of(self, box: str) -> str: ...


class NoDates:
    """A source for clients that cannot probe: every probe fails, so nothing is learnt."""

    def probe_date(self, box: str) -> DateProbe | None:
        return None

    def host_of(self, box: str) -> str:
        return box


@dataclass(frozen=True)
class ClockPolicy:
    """How hard to probe and how much to trust (the GYM_CLOCK_* settings)."""

    probes: int = 10
    margin: timedelta = timedelta(milliseconds=5)
    max_age: timedelta = timedelta(minutes=15)
    min_interval: timedelta = timedelta(seconds=60)
    drift_ppm: float = 20.0
    lead: timedelta = timedelta(seconds=120)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ClockPolicy:
        return cls(
            probes=int(config["GYM_CLOCK_PROBES"]),
            margin=timedelta(milliseconds=float(config["GYM_CLOCK_MARGIN_MS"])),
            max_age=timedelta(seconds=float(config["GYM_CLOCK_MAX_AGE_S"])),
            min_interval=timedelta(seconds=float(config["GYM_CLOCK_MIN_INTERVAL_S"])),
            drift_ppm=float(config["GYM_CLOCK_DRIFT_PPM"]),
            lead=timedelta(seconds=float(config["GYM_CLOCK_LEAD_S"])),
        )


@dataclass
class _Host:
    """What we know of one host's clock."""

    bounds: list[Bound] = field(default_factory=list)
    refreshed_at: datetime | None = None
    rtt: timedelta | None = None  # the shortest round trip a probe took
    probing: threading.Lock = field(default_factory=threading.Lock)


class GymClocks:
    """Per-host offset estimates, the probes that feed them, and the fire instant."""

    def __init__(self, source: DateSource, clock: Clock, policy: ClockPolicy) -> None:
        self._source = source
        self._clock = clock
        self.policy = policy
        self._hosts: dict[str, _Host] = {}
        self._lock = threading.Lock()

    def _host(self, box: str) -> _Host:
        with self._lock:
            return self._hosts.setdefault(self._source.host_of(box), _Host())

    def _add(self, host: _Host, bound: Bound) -> None:
        with self._lock:
            oldest = self._clock.now() - self.policy.max_age
            host.bounds = [b for b in host.bounds if b.at >= oldest][-(MAX_BOUNDS - 1) :]
            host.bounds.append(bound)

    def estimate(self, box: str) -> Estimate | None:
        """The current estimate for the box's host; None when there is none, or too old."""
        host = self._host(box)
        now = self._clock.now()
        with self._lock:
            bounds = [b for b in host.bounds if now - b.at <= self.policy.max_age]
        return estimate(bounds, now, self.policy.drift_ppm)

    def fire_instant(self, box: str, opening_at: datetime) -> datetime:
        """When (our clock) to send a booking so it reaches the gym at `opening_at` (its clock)."""
        current = self.estimate(box)
        if current is None:
            return opening_at + self.policy.margin
        return current.fire_instant(opening_at, self.policy.margin)

    def note_too_early(self, box: str, *, sent_at: datetime, opening_at: datetime) -> None:
        """A `-12` too-early answer to a request sent at `sent_at`: an upper bound on θ."""
        self._add(self._host(box), from_too_early(sent_at, opening_at))
        log.info("gym clock box=%s: too early at %s for %s", box, sent_at, opening_at)

    def note_accepted(self, box: str, *, sent_at: datetime, opening_at: datetime) -> None:
        """An answer judged after the opening to a request sent at `sent_at`: a lower bound."""
        self._add(self._host(box), from_accepted(sent_at, opening_at))

    def note_date(self, box: str, probe: DateProbe) -> bool:
        """Feed any answer's `Date` header (a probe's, or a free one); False if it had none."""
        stamped = parse_http_date(probe.date_header)
        if stamped is None:
            return False
        self._add(self._host(box), from_date(probe.sent_at, probe.received_at, stamped))
        return True

    def refresh(self, box: str, *, force: bool = False) -> Estimate | None:
        """Probe the box host's `Date` until its offset is narrow or GYM_CLOCK_PROBES are spent.

        Blocks about a second per probe. Does nothing (returns the cached estimate) when the
        host was refreshed less than GYM_CLOCK_MIN_INTERVAL_S ago, unless `force`, or while
        another thread probes it. Never raises for network trouble.
        """
        host = self._host(box)
        if not host.probing.acquire(blocking=False):
            return self.estimate(box)
        try:
            now = self._clock.now()
            recent = (
                host.refreshed_at is not None and now - host.refreshed_at < self.policy.min_interval
            )
            if not recent or force:
                host.refreshed_at = now
                self._probe(box, host)
        finally:
            host.probing.release()
        return self.estimate(box)

    def _probe(self, box: str, host: _Host) -> None:
        failures = 0
        for _ in range(self.policy.probes):
            current = self.estimate(box)
            if current is not None and current.width <= TARGET_WIDTH:
                return
            rtt = host.rtt or timedelta(0)
            self._clock.sleep_until(next_probe_at(current, self._clock.now(), PROBE_SETUP, rtt))
            probe = self._source.probe_date(box)
            if probe is not None:
                took = probe.received_at - probe.sent_at
                host.rtt = took if host.rtt is None else min(host.rtt, took)
            if probe is None or not self.note_date(box, probe):
                failures += 1
                if failures >= 2:  # the host is down or sends no Date: try again next time
                    log.warning("gym clock box=%s: probes failed; keeping the estimate", box)
                    return
        log.info("gym clock box=%s: %s", box, self.estimate(box))

    def refresh_many(self, boxes: list[str]) -> None:
        """refresh() several boxes, a few hosts at a time."""
        if boxes:
            with ThreadPoolExecutor(max_workers=min(PARALLEL_HOSTS, len(boxes))) as pool:
                list(pool.map(self.refresh, boxes))

    def snapshot(self) -> dict[str, Any]:
        """Every host's estimate, JSON-safe (for diagnostics)."""
        with self._lock:
            hosts = {name: list(h.bounds) for name, h in self._hosts.items()}
        now = self._clock.now()
        out: dict[str, Any] = {}
        for name, bounds in hosts.items():
            found = estimate(bounds, now, self.policy.drift_ppm)
            out[name] = found.to_json() if found else None
        return out


def init_app(app: Flask) -> None:
    """One GymClocks per app, probing through the executor's AimHarder client (after
    execution.init_app). Tests may hand in GYM_CLOCK_SOURCE."""
    from flask_app.core.execution import get_executor

    executor = get_executor(app)
    source = app.config.get("GYM_CLOCK_SOURCE") or executor.client
    if not isinstance(source, DateSource):  # a test double that books only: nothing to probe
        source = NoDates()
    app.extensions[_EXT] = GymClocks(source, executor.clock, ClockPolicy.from_config(app.config))


def get_gym_clocks(app: Flask | None = None) -> GymClocks:
    """The app's GymClocks (the current app's when none is given)."""
    clocks: GymClocks = (app or current_app).extensions[_EXT]
    return clocks
