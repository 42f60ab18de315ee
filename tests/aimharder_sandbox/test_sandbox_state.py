"""The sandbox's gym rules, driven directly through `SandboxState`."""

from __future__ import annotations

from typing import Any

import pytest

from aimharder_sandbox.state import SandboxClass, SandboxState, parse_opens_at

DAY = "20261128"
OPENS_AT = "2026-11-24T08:00:00+01:00"


def _book(
    state: SandboxState, user: str | None = "alice", class_id: str = "101", at_ns: int = 0
) -> dict[str, Any]:
    reply = state.book(box="sandbox", class_id=class_id, day=DAY, user=user, at_ns=at_ns)
    assert reply.body is not None
    return reply.body


def test_unknown_class_is_created_open_with_room_for_twenty():
    state = SandboxState()
    states = [_book(state, f"user{i}")["bookState"] for i in range(21)]
    assert states == [1] * 20 + [-1]


def test_booking_returns_a_reservation_id():
    body = _book(SandboxState())
    assert body["bookState"] == 1
    assert body["id"]


def test_booking_before_opening_is_too_early_then_succeeds_at_the_instant():
    state = SandboxState()
    opens_ns = parse_opens_at(OPENS_AT)
    assert opens_ns is not None
    state.define_class(SandboxClass("101", DAY, opens_at_ns=opens_ns))
    early = _book(state, at_ns=opens_ns - 1)
    assert (early["bookState"], early["errorMssgLang"]) == (-12, "ERROR_ANTELACION_CLIENTE")
    assert early["errorMssg"] == "No puedes reservar clases con más de 4 días de antelación"
    assert _book(state, at_ns=opens_ns) == {"bookState": 1, "clasesContratadas": "WOD", "id": "1"}


def test_same_user_twice_is_refused_as_same_time():
    state = SandboxState()
    _book(state)
    body = _book(state)
    assert (body["bookState"], body["errorMssgLang"]) == (-12, "NOPUEDESRESERVAMISMAHORA")


def test_full_class_fills_the_waitlist_then_refuses():
    state = SandboxState()
    state.define_class(SandboxClass("101", DAY, capacity=1, waitlist=1))
    states = [_book(state, user)["bookState"] for user in ("a", "b", "c")]
    assert states == [1, 0, -1]


def test_credits_run_out():
    state = SandboxState()
    state.add_session("alice", credits=1)
    assert _book(state, class_id="1")["bookState"] == 1
    assert _book(state, class_id="2")["bookState"] == -2


@pytest.mark.parametrize("user", [None, "", "expired-abc"])
def test_invalid_session_logs_out(user):
    assert _book(SandboxState(), user) == {"logout": 1}


def test_strict_mode_accepts_only_registered_sessions():
    state = SandboxState(accept_any_session=False)
    assert _book(state, "stranger") == {"logout": 1}
    state.add_session("stranger")
    assert _book(state, "stranger")["bookState"] == 1


def test_cancel_frees_the_place_and_promotes_the_waitlist():
    state = SandboxState()
    state.define_class(SandboxClass("101", DAY, capacity=1, waitlist=1))
    first = _book(state, "a")
    _book(state, "b")
    assert state.cancel(reservation_id=first["id"], user="b") == {"cancelState": 3}
    assert state.cancel(reservation_id=first["id"], user="a") == {"cancelState": 1}
    rows = state.listing(box="sandbox", day=DAY, user="b", box_param=state.box_id("sandbox"))
    rows = rows["bookings"]
    assert [(r["id"], r["bookState"], r["ocupation"]) for r in rows] == [("101", 1, 1)]


def test_fault_with_count_applies_that_many_times():
    state = SandboxState()
    state.set_fault("error_500", count=2)
    replies = [state.book(box="sandbox", class_id="1", day=DAY, user=u, at_ns=0) for u in "abc"]
    assert [r.status for r in replies] == [500, 500, 200]
    assert [r.fault.mode for r in replies] == ["error_500", "error_500", "none"]


def _fault_modes(state: SandboxState, n: int) -> list[str]:
    replies = [
        state.book(box="sandbox", class_id=str(i), day=DAY, user="u", at_ns=0) for i in range(n)
    ]
    return [r.fault.mode for r in replies]


def test_fault_with_rate_hits_about_that_share_and_repeats_with_the_seed():
    state = SandboxState()
    state.set_fault("error_500", rate=0.05, seed=7)
    first = _fault_modes(state, 2000)
    hits = first.count("error_500")
    assert 50 <= hits <= 150  # 5 % of 2,000 = 100; binomial sd ≈ 9.7
    assert set(first) == {"error_500", "none"}
    state.set_fault("error_500", rate=0.05, seed=7)
    assert _fault_modes(state, 2000) == first  # same seed, same bookings faulted
    assert state.snapshot()["fault"]["rate"] == 0.05


def test_fault_rate_with_count_stops_after_count_hits():
    state = SandboxState()
    state.set_fault("error_500", count=3, rate=0.5, seed=1)
    modes = _fault_modes(state, 40)
    assert modes.count("error_500") == 3
    assert state.snapshot()["fault"]["mode"] == "none"  # used up, back to normal


def test_fault_rate_one_is_every_booking_and_no_rate_is_unchanged():
    state = SandboxState()
    state.set_fault("error_500", count=2, rate=1.0)
    assert _fault_modes(state, 3) == ["error_500", "error_500", "none"]
    state.set_fault("error_500", count=2)
    assert _fault_modes(state, 3) == ["error_500", "error_500", "none"]


@pytest.mark.parametrize("rate", [0, -0.1, 1.5])
def test_fault_rate_outside_zero_one_is_refused(rate):
    with pytest.raises(ValueError, match="rate"):
        SandboxState().set_fault("error_500", rate=rate)


def test_unknown_fault_mode_is_refused():
    with pytest.raises(ValueError, match="unknown fault mode"):
        SandboxState().set_fault("explode")


def test_arrivals_record_every_booking_in_order():
    state = SandboxState()
    _book(state, "a", at_ns=20)
    _book(state, None, at_ns=10)
    arrivals = state.arrivals()
    assert [(a["at_ns"], a["user"], a["book_state"], a["logout"]) for a in arrivals] == [
        (10, None, None, True),
        (20, "a", 1, False),
    ]
    state.clear_arrivals()
    assert state.arrivals() == []


def test_opens_at_needs_an_offset():
    with pytest.raises(ValueError, match="offset"):
        parse_opens_at("2026-11-24T08:00:00")
    assert parse_opens_at("1970-01-01T00:00:01.000001+00:00") == 1_000_001_000
