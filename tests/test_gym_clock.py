"""Estimating a box host's clock offset: the pure estimator on simulated observations, and
GymClocks probing a simulated host (fake clock: no waiting, no timing assertions)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_app.aimharder.client import DateProbe
from flask_app.aimharder.clock_offset import (
    Bound,
    agreed_interval,
    estimate,
    from_accepted,
    from_date,
    from_too_early,
    next_probe_at,
    parse_http_date,
)
from flask_app.aimharder.gym_clock import ClockPolicy, GymClocks
from tests.fakes import FakeClock

T0 = datetime(2026, 11, 30, 14, 58, 0, 123456, tzinfo=UTC)
MS = timedelta(milliseconds=1)
OPENING = datetime(2026, 11, 30, 15, 0, 0, tzinfo=UTC)


class SimulatedHost:
    """A box host whose clock is ours + offset (+ jitter per request), `rtt` away.

    θ (what is estimated) = offset + the one-way delay up (rtt/2): the gym's reading when our
    request arrives minus our clock when it left.
    """

    def __init__(self, clock: FakeClock, offset: timedelta, rtt: timedelta, jitter=MS * 0, seed=1):
        self.clock, self.offset, self.rtt, self.jitter = clock, offset, rtt, jitter
        self.rng = random.Random(seed)
        self.requests = 0

    @property
    def theta(self) -> timedelta:
        return self.offset + self.rtt / 2

    def gym_reading(self, sent_at: datetime) -> datetime:
        drawn = self.jitter * self.rng.uniform(-1, 1)
        return sent_at + self.theta + drawn

    def probe_date(self, box: str) -> DateProbe | None:
        self.requests += 1
        sent = self.clock.now()
        stamped = self.gym_reading(sent)  # the host stamps it on arrival
        self.clock.advance(self.rtt)
        return DateProbe(sent, self.clock.now(), formatdate(stamped.timestamp(), usegmt=True), 200)

    def host_of(self, box: str) -> str:
        return "https://box.test"


def probe_loop(host: SimulatedHost, rounds: int) -> list[Bound]:
    """What GymClocks does: each probe timed so the gym's second boundary splits the interval."""
    bounds: list[Bound] = []
    for _ in range(rounds):
        current = estimate(bounds, host.clock.now(), 0)
        host.clock.sleep_until(next_probe_at(current, host.clock.now(), 50 * MS, host.rtt))
        probe = host.probe_date("b")
        assert probe is not None
        bounds.append(
            from_date(probe.sent_at, probe.received_at, parse_http_date(probe.date_header))
        )
    return bounds


# --- the pure estimator -------------------------------------------------------------------


def test_one_date_header_pins_the_offset_to_about_a_second():
    sent, received = T0, T0 + 2 * MS
    bound = from_date(sent, received, datetime(2026, 11, 30, 14, 58, 3, tzinfo=UTC))
    found = estimate([bound], received, 0)
    assert found is not None
    assert (found.low, found.high) == (bound.low, bound.high)
    assert found.width == timedelta(seconds=1) + 2 * MS


@pytest.mark.parametrize("offset_ms", [-300, -20, 0, 20, 300, -5000, 86_400_000])
def test_bisecting_probes_narrow_the_offset_to_the_round_trip(offset_ms):
    clock = FakeClock(T0)
    host = SimulatedHost(clock, offset_ms * MS, rtt=MS / 2)
    found = estimate(probe_loop(host, 12), clock.now(), 0)
    assert found is not None
    assert found.low <= host.theta <= found.high
    assert found.width <= host.rtt + MS / 2  # 1 s / 2**12 ≈ 0.24 ms, plus the round trip
    assert found.rejected == 0


@settings(max_examples=60, deadline=None)
@given(
    offset_us=st.integers(min_value=-2_000_000, max_value=2_000_000),
    rtt_us=st.integers(min_value=50, max_value=80_000),
    start_us=st.integers(min_value=0, max_value=999_999),
)
def test_the_true_offset_is_always_inside_and_firing_is_never_early(offset_us, rtt_us, start_us):
    clock = FakeClock(T0.replace(microsecond=start_us))
    host = SimulatedHost(clock, timedelta(microseconds=offset_us), timedelta(microseconds=rtt_us))
    found = estimate(probe_loop(host, 10), clock.now(), 0)
    assert found is not None and found.low <= host.theta <= found.high
    margin = 2 * MS
    fire = found.fire_instant(OPENING, margin)
    arrives_gym_time = fire + host.theta
    assert arrives_gym_time >= OPENING  # never too early
    assert arrives_gym_time - OPENING <= found.width + margin  # late by at most width + margin


def test_too_early_and_accepted_answers_bound_each_side():
    sent = OPENING - 10 * MS
    assert from_too_early(sent, OPENING).high == 10 * MS
    assert from_accepted(sent, OPENING).low == 10 * MS
    only_upper = estimate([from_too_early(sent, OPENING)], OPENING, 0)
    assert only_upper is None  # no lower bound: no estimate to fire by
    assert estimate([from_accepted(sent, OPENING)], OPENING, 0) is None
    both = estimate(
        [from_too_early(OPENING - 10 * MS, OPENING), from_accepted(OPENING - 4 * MS, OPENING)],
        OPENING,
        0,
    )
    assert both is not None and (both.low, both.high) == (4 * MS, 10 * MS)


def test_a_too_early_answer_narrows_a_date_estimate_from_above():
    date = Bound(-30 * MS, 20 * MS, T0, "date")
    narrowed = estimate([date, from_too_early(OPENING + 5 * MS, OPENING)], OPENING, 0)
    assert narrowed is not None and (narrowed.low, narrowed.high) == (-30 * MS, -5 * MS)


def test_an_answer_contradicting_the_date_headers_moves_the_interval():
    # Date headers say θ ∈ [-2, +2] ms, but the deciding clock answered -12 to a request sent
    # 10 ms after the opening by our clock: it reads θ < -10 ms. Keep the width, respect it.
    dates = [Bound(-2 * MS, 2 * MS, T0, "date")] * 3
    found = estimate([*dates, from_too_early(OPENING + 10 * MS, OPENING)], OPENING, 0)
    assert found is not None
    assert (found.low, found.high) == (-14 * MS, -10 * MS)
    accepted = estimate([*dates, from_accepted(OPENING - 30 * MS, OPENING)], OPENING, 0)
    assert accepted is not None and (accepted.low, accepted.high) == (30 * MS, 34 * MS)


def test_contradicting_observations_are_outvoted():
    good = [Bound(-22 * MS, -18 * MS, T0, "date"), Bound(-21 * MS, -17 * MS, T0, "date")]
    liar = Bound(500 * MS, 600 * MS, T0, "date")  # another machine behind the load balancer
    found = estimate([*good, liar], T0, 0)
    assert found is not None
    assert (found.low, found.high, found.agreeing, found.rejected) == (-21 * MS, -18 * MS, 2, 1)


def test_old_observations_widen_by_the_drift_they_allow():
    bound = Bound(-1 * MS, 1 * MS, T0, "date")
    later = estimate([bound], T0 + timedelta(seconds=100), drift_ppm=20)
    assert later is not None
    assert (later.low, later.high) == (-3 * MS, 3 * MS)  # 20 ppm of 100 s = 2 ms each side


def test_marzullo_picks_the_most_covered_region():
    assert agreed_interval([]) is None
    assert agreed_interval([(0, 10), (5, 15), (8, 20)]) == (8, 10, 3)
    assert agreed_interval([(0, 1), (1, 2)]) == (1, 1, 2)  # touching intervals agree


def test_next_probe_puts_the_gyms_second_boundary_at_the_interval_middle():
    found = estimate([Bound(200 * MS, 400 * MS, T0, "date")], T0, 0)
    at = next_probe_at(found, T0, 50 * MS)
    assert at >= T0 + 50 * MS
    assert (at + 300 * MS).microsecond == 0  # sent at a gym boundary if θ were the middle
    assert next_probe_at(None, T0, 50 * MS) == T0 + 50 * MS


def test_unreadable_date_headers_are_ignored():
    assert parse_http_date(None) is None
    assert parse_http_date("yesterday") is None
    assert parse_http_date("Mon, 30 Nov 2026 14:58:03 GMT") == datetime(
        2026, 11, 30, 14, 58, 3, tzinfo=UTC
    )


# --- GymClocks ----------------------------------------------------------------------------


def clocks_for(host: SimulatedHost, **policy) -> GymClocks:
    defaults = {"margin": 2 * MS, "min_interval": timedelta(seconds=60)}
    return GymClocks(host, host.clock, ClockPolicy(**(defaults | policy)))


@pytest.mark.parametrize("offset_ms", [-300, -20, 0, 20, 300])
def test_fire_instant_reaches_the_gym_at_its_opening(offset_ms):
    clock = FakeClock(T0)
    host = SimulatedHost(clock, offset_ms * MS, rtt=MS)
    clocks = clocks_for(host)
    found = clocks.refresh("box")
    assert found is not None and found.low <= host.theta <= found.high
    fire = clocks.fire_instant("box", OPENING)
    lateness = fire + host.theta - OPENING
    assert timedelta(0) <= lateness <= found.width + 2 * MS


def test_without_an_estimate_fire_at_the_opening_plus_the_margin():
    clock = FakeClock(T0)
    clocks = clocks_for(SimulatedHost(clock, 0 * MS, MS))
    assert clocks.estimate("box") is None
    assert clocks.fire_instant("box", OPENING) == OPENING + 2 * MS


def test_refresh_is_rate_limited_and_forced_on_request():
    clock = FakeClock(T0)
    host = SimulatedHost(clock, -20 * MS, MS)
    clocks = clocks_for(host, probes=3)
    clocks.refresh("box")
    assert host.requests == 3
    clock.advance(timedelta(seconds=10))
    clocks.refresh("box")
    assert host.requests == 3  # refreshed 10 s ago: cached
    clocks.refresh("box", force=True)
    assert host.requests == 6
    clock.advance(timedelta(seconds=61))
    clocks.refresh("box")
    assert host.requests == 9


def test_estimates_expire_after_the_max_age():
    clock = FakeClock(T0)
    clocks = clocks_for(SimulatedHost(clock, 300 * MS, MS), max_age=timedelta(minutes=15))
    clocks.refresh("box")
    assert clocks.estimate("box") is not None
    clock.advance(timedelta(minutes=16))
    assert clocks.estimate("box") is None
    assert clocks.fire_instant("box", OPENING) == OPENING + 2 * MS


def test_too_early_report_moves_the_fire_instant_later():
    clock = FakeClock(T0)
    host = SimulatedHost(clock, 0 * MS, MS)
    clocks = clocks_for(host)
    clocks.refresh("box")
    first = clocks.fire_instant("box", OPENING)
    # The machine that decides runs 30 ms behind the one that stamps Date: -12 at `first`.
    clocks.note_too_early("box", sent_at=first, opening_at=OPENING)
    second = clocks.fire_instant("box", OPENING)
    assert second > first
    clocks.note_too_early("box", sent_at=second, opening_at=OPENING)
    assert clocks.fire_instant("box", OPENING) > second


def test_accepted_answers_refine_the_estimate():
    clock = FakeClock(T0)
    host = SimulatedHost(clock, 0 * MS, 20 * MS)  # a far host: Date alone leaves ~20 ms
    clocks = clocks_for(host)
    found = clocks.refresh("box")
    assert found is not None and found.width > 10 * MS
    clocks.note_accepted("box", sent_at=OPENING - host.theta + MS, opening_at=OPENING)
    narrowed = clocks.estimate("box")
    assert narrowed is not None and narrowed.width < found.width
    assert narrowed.low <= host.theta <= narrowed.high


def test_a_host_that_does_not_answer_stops_the_probing():
    class Down:
        requests = 0

        def probe_date(self, box):
            self.requests += 1
            return None

        def host_of(self, box):
            return "https://down.test"

    down = Down()
    clocks = GymClocks(down, FakeClock(T0), ClockPolicy(probes=10))
    assert clocks.refresh("box") is None
    assert down.requests == 2


def test_boxes_behind_one_base_url_share_one_estimate():
    clock = FakeClock(T0)
    host = SimulatedHost(clock, 20 * MS, MS)
    clocks = clocks_for(host, probes=4)
    clocks.refresh("a")
    clocks.refresh("b")  # same host: rate-limited
    assert host.requests == 4
    assert clocks.estimate("a") == clocks.estimate("b")
    assert list(clocks.snapshot()) == ["https://box.test"]
