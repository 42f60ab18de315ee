"""The sandbox's own clock (offset, jitter), its window rules, and its listing's `box` parameter."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
import pytest

from aimharder_sandbox.__main__ import parse_args
from aimharder_sandbox.clock import GymClock, as_ns, opening_ns, settings_from_ms
from aimharder_sandbox.state import SandboxClass, SandboxState, default_box_id, scheduled_class
from aimharder_sandbox.testing import run_sandbox

DAY = "20261128"
MS = 1_000_000


def _book_at(state: SandboxState, at_ns: int, user: str = "alice") -> dict:
    reply = state.book(box="sandbox", class_id="101", day=DAY, user=user, at_ns=at_ns)
    assert reply.body is not None
    return reply.body


@pytest.mark.parametrize("offset_ms", [-300, -20, 0, 20, 300])
def test_window_opens_when_the_gyms_clock_reads_the_opening(offset_ms):
    state = SandboxState(clock=settings_from_ms(offset_ms))
    opens = as_ns(datetime(2026, 11, 24, 7, tzinfo=UTC))
    state.define_class(SandboxClass("101", DAY, opens_at_ns=opens))
    host_opening = state.clock.host_ns(opens)
    assert host_opening == opens - offset_ms * MS
    early = _book_at(state, host_opening - 1, "early")
    assert (early["bookState"], early["errorMssgLang"]) == (-12, "ERROR_ANTELACION_CLIENTE")
    assert _book_at(state, host_opening, "on-time")["bookState"] == 1
    arrivals = state.arrivals()
    assert [a["gym_at_ns"] - a["at_ns"] for a in arrivals] == [offset_ms * MS] * 2


def test_jitter_stays_within_its_bound_and_repeats_with_its_seed():
    settings = settings_from_ms(-20, 2, seed=7)
    clock = GymClock(settings)
    series = [clock.draw_skew_ns() for _ in range(500)]
    assert all(-22 * MS <= d <= -18 * MS for d in series)
    assert len(set(series)) > 100  # it does jitter
    again = GymClock(settings)
    assert [again.draw_skew_ns() for _ in range(500)] == series


def test_negative_jitter_is_refused():
    with pytest.raises(ValueError, match="jitter"):
        settings_from_ms(0, -1)


def test_class_by_start_and_days_rule_opens_at_the_same_wall_clock_time_dst_aware():
    # Reference §1.7: 28 Oct 08:00 Madrid (UTC+1), 4 days before -> 24 Oct 08:00 (UTC+2) = 06:00Z.
    cls = scheduled_class("101", start="2026-10-28T08:00:00+01:00", opens_days_before=4)
    assert (cls.day, cls.time) == ("20261028", "08:00 - 09:00")
    assert cls.opens_at_ns == as_ns(datetime(2026, 10, 24, 6, tzinfo=UTC))
    state = SandboxState()
    state.define_class(cls)
    too_early = state.book(
        box="sandbox", class_id="101", day=cls.day, user="a", at_ns=cls.opens_at_ns - 1
    ).body
    assert too_early is not None
    assert too_early["errorMssgLang"] == "ERROR_ANTELACION_CLIENTE"
    assert too_early["errorMssg"] == "No puedes reservar clases con más de 4 días de antelación"


def test_class_by_hours_rule_answers_the_hours_key():
    cls = scheduled_class("7", start="2026-11-28T08:00:00+01:00", opens_hours_before=72)
    assert cls.opens_at_ns == as_ns(datetime(2026, 11, 25, 7, tzinfo=UTC))
    body = cls.too_early()
    assert body["errorMssgLang"] == "ERROR_ANTELACION_CLIENTE_HORAS"
    assert "72 horas" in body["errorMssg"]


def test_spring_forward_gap_reads_as_after_the_gap():
    # 29 Mar 2026 02:30 does not exist in Madrid: it is read as 03:30 CEST (01:30Z), as PHP does.
    start = datetime.fromisoformat("2026-04-01T02:30:00+02:00")
    assert opening_ns(start, "Europe/Madrid", 3, None) == as_ns(
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    )


def test_class_without_rule_is_open_and_bad_input_is_refused():
    assert scheduled_class("1", start="2026-11-28T08:00:00+01:00").opens_at_ns is None
    with pytest.raises(ValueError, match="offset"):
        scheduled_class("1", start="2026-11-28T08:00:00")
    with pytest.raises(ValueError, match="before"):
        scheduled_class("1", start="2026-11-28T08:00:00+01:00", opens_days_before=-1)


def test_http_date_header_and_decisions_follow_the_gyms_clock():
    with (
        run_sandbox(clock_offset_ms=300_000) as sandbox,
        httpx.Client(base_url=sandbox.url) as http,
    ):
        # Opened 4 minutes ago by the gym's clock (5 minutes ahead of ours), 1 minute ahead by ours.
        sandbox.add_class("101", DAY, opens_at=datetime.now(UTC) + timedelta(minutes=1))
        before = time.time()
        response = http.post(
            "/api/book", data={"id": "101", "day": DAY}, headers={"Cookie": "amhrdrauth=a"}
        )
        after = time.time()
        assert response.json()["bookState"] == 1
        stamped = parsedate_to_datetime(response.headers["Date"]).timestamp()
        assert int(before + 300) <= stamped <= after + 300
        [arrival] = sandbox.arrivals()
        assert arrival["gym_at_ns"] - arrival["at_ns"] == 300_000 * MS


def test_gym_clock_behind_answers_too_early_over_http():
    with run_sandbox() as sandbox, httpx.Client(base_url=sandbox.url) as http:
        sandbox.set_clock(offset_ms=-600_000)  # 10 minutes behind
        sandbox.add_class("101", DAY, opens_at=datetime.now(UTC) - timedelta(minutes=5))
        body = http.post(
            "/api/book", data={"id": "101", "day": DAY}, headers={"Cookie": "amhrdrauth=a"}
        ).json()
        assert (body["bookState"], body["errorMssgLang"]) == (-12, "ERROR_ANTELACION_CLIENTE")
        assert http.get("/_sandbox/clock").json() == {
            "offset_ms": -600_000,
            "jitter_ms": 0,
            "seed": None,
        }


def test_clock_and_scheduled_class_through_the_admin_api():
    with run_sandbox() as sandbox, httpx.Client(base_url=sandbox.url) as http:
        set_clock = http.post("/_sandbox/clock", json={"offset_ms": -20, "jitter_ms": 2, "seed": 1})
        assert set_clock.json() == {"offset_ms": -20, "jitter_ms": 2, "seed": 1}
        assert http.post("/_sandbox/clock", json={"jitter_ms": -1}).status_code == 400
        created = http.post(
            "/_sandbox/classes",
            json={"class_id": "9", "start": "2026-11-28T18:00:00+01:00", "opens_days_before": 2},
        )
        assert created.json()["day"] == DAY
        [cls] = sandbox.state.snapshot()["classes"]
        assert cls["opens_at_ns"] == as_ns(datetime(2026, 11, 26, 17, tzinfo=UTC))
        bad_zone = http.post(
            "/_sandbox/classes",
            json={"class_id": "9", "start": "2026-11-28T18:00:00+01:00", "timezone": "Mars/Base"},
        )
        assert bad_zone.status_code == 400 and "Mars/Base" in bad_zone.json()["error"]


def test_listing_lists_the_box_only_for_its_numeric_id():
    with run_sandbox() as sandbox, httpx.Client(base_url=sandbox.url) as http:
        cookie = {"Cookie": "amhrdrauth=alice"}
        http.post("/api/book", data={"id": "101", "day": DAY}, headers=cookie)

        def rows(**params: str) -> list:
            answer = http.get("/api/bookings", params={"day": DAY, **params}, headers=cookie)
            return answer.json()["bookings"]

        assert sandbox.box_id() == default_box_id("sandbox")
        assert rows() == []  # no box parameter: no box
        assert rows(box="sandbox") == []  # the subdomain is not the id
        assert [r["id"] for r in rows(box=sandbox.box_id())] == ["101"]
        assert http.post("/_sandbox/boxes", json={"box_id": "10122"}).status_code == 200
        assert rows(box=default_box_id("sandbox")) == []
        assert [r["id"] for r in rows(box="10122")] == ["101"]
        assert http.post("/_sandbox/boxes", json={"box_id": "x1"}).status_code == 400
        dead = http.get("/api/bookings", params={"day": DAY, "box": "10122"})
        assert dead.json() == {"logout": 1}


def test_default_box_ids_are_stable_five_digit_numbers():
    assert default_box_id("sandbox") == default_box_id("sandbox")
    assert all(len(default_box_id(b)) == 5 for b in ("a", "crossfit", "sandbox"))


def test_command_line_takes_clock_and_box_ids():
    args = parse_args(["--clock-offset-ms", "-20", "--clock-jitter-ms", "2", "--box-id", "a=10"])
    assert (args.clock_offset_ms, args.clock_jitter_ms, args.box_id) == (-20.0, 2.0, ["a=10"])
    with pytest.raises(SystemExit):
        parse_args(["--box-id", "a=b"])
    with pytest.raises(SystemExit):
        parse_args(["--clock-jitter-ms", "-1"])
