"""The window maths: N calendar days at the same wall-clock time, then hours; DST edges."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_app.core.window import (
    Rule,
    Window,
    WindowError,
    is_known_zone,
    local_day,
    opening,
    resolve,
)

MADRID = "Europe/Madrid"
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("class_start", "rule", "opens"),
    [
        # Reference §1.7's example: across the October change the UTC instant moves by an hour.
        ("2026-10-28T08:00:00+01:00", Rule(4), "2026-10-24T06:00:00+00:00"),
        # The other way across the last Sunday of March (29 Mar 2026).
        ("2026-03-31T08:00:00+02:00", Rule(4), "2026-03-27T07:00:00+00:00"),
        # The class itself at 02:30 CEST... on 1 Apr; 3 days earlier is 29 Mar 02:30, a time the
        # spring-forward skipped: read as 03:30 CEST (01:30Z), as PHP does.
        ("2026-04-01T02:30:00+02:00", Rule(3), "2026-03-29T01:30:00+00:00"),
        # A class on the spring-forward day itself: 03:30 CEST (02:30 does not exist that day).
        ("2026-03-29T03:30:00+02:00", Rule(1), "2026-03-28T02:30:00+00:00"),
        # 25 Oct 2026 02:30 happens twice: the first one (CEST, 00:30Z).
        ("2026-10-28T02:30:00+01:00", Rule(3), "2026-10-25T00:30:00+00:00"),
        # A class during the repeated hour (second 02:30, CET) opens a day earlier at 02:30 CEST.
        ("2026-10-25T02:30:00+01:00", Rule(1), "2026-10-24T00:30:00+00:00"),
        # Hours are elapsed hours: 72 h before a class just after the change.
        ("2026-03-29T08:00:00+02:00", Rule(None, 72), "2026-03-26T06:00:00+00:00"),
        # Days, then hours.
        ("2026-11-28T08:00:00+01:00", Rule(2, 1), "2026-11-26T06:00:00+00:00"),
        ("2026-11-28T08:00:00+01:00", Rule(0, 0), "2026-11-28T07:00:00+00:00"),
        # The start may be given in any offset: it is the same instant.
        ("2026-10-28T07:00:00+00:00", Rule(4), "2026-10-24T06:00:00+00:00"),
    ],
)
def test_opening_is_n_calendar_days_earlier_at_the_same_wall_clock_time(class_start, rule, opens):
    assert opening(at(class_start), MADRID, rule) == at(opens)


@given(
    start=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
    ),
    days=st.integers(min_value=0, max_value=30),
)
def test_opening_keeps_the_wall_clock_time_unless_a_gap_moved_it(start, days):
    tz = ZoneInfo(MADRID)
    local = start.astimezone(tz)
    opened = opening(start, MADRID, Rule(days)).astimezone(tz)
    assert opened.date() == local.date() - timedelta(days=days)
    shift = datetime.combine(opened.date(), opened.time()) - datetime.combine(
        opened.date(), local.time()
    )
    assert shift in (timedelta(0), timedelta(hours=1))  # an hour only across a skipped time


def test_local_day_is_the_date_in_the_box_zone():
    assert local_day(at("2026-11-27T23:30:00+00:00"), MADRID) == "20261128"
    assert local_day(at("2026-11-27T23:30:00+00:00"), "UTC") == "20261127"


def test_zone_names_come_from_the_iana_database_only():
    assert is_known_zone(MADRID) and is_known_zone("America/New_York")
    assert not is_known_zone("Mars/Olympus") and not is_known_zone("../../etc/passwd")


def test_resolve_from_class_start_and_rule():
    window = resolve(
        day="20261028", now=NOW, class_start=at("2026-10-28T08:00:00+01:00"), rule=Rule(4)
    )
    assert window == Window(
        at("2026-10-24T06:00:00+00:00"), at("2026-10-28T08:00:00+01:00"), MADRID
    )


def test_resolve_keeps_a_plain_available_at():
    assert resolve(day="20261028", now=NOW, available_at=NOW) == Window(NOW)


def test_resolve_accepts_a_consistent_pair_and_refuses_an_inconsistent_one():
    start = at("2026-10-28T08:00:00+01:00")
    agreed = resolve(
        day="20261028",
        now=NOW,
        class_start=start,
        rule=Rule(4),
        available_at=at("2026-10-24T08:00:00+02:00"),
    )
    assert agreed.available_at == at("2026-10-24T06:00:00+00:00")
    with pytest.raises(WindowError) as err:
        resolve(
            day="20261028",
            now=NOW,
            class_start=start,
            rule=Rule(4),
            available_at=at("2026-10-24T07:00:00+00:00"),
        )
    assert err.value.field == "available_at" and "06:00" in err.value.problem


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "available_at"),
        ({"rule": Rule(4)}, "opens_days_before"),
        ({"rule": Rule(None, 72)}, "opens_hours_before"),
        ({"class_start": at("2026-10-28T08:00:00+01:00")}, "opens_days_before"),
        ({"class_start": at("2026-02-01T08:00:00+01:00"), "rule": Rule(4)}, "class_start"),
        ({"class_start": at("2026-10-29T08:00:00+01:00"), "rule": Rule(4)}, "booking_data.day"),
        (
            {
                "class_start": at("2026-10-28T08:00:00+01:00"),
                "available_at": at("2026-10-29T08:00Z"),
            },
            "available_at",
        ),
    ],
)
def test_resolve_names_the_field_at_fault(kwargs, field):
    with pytest.raises(WindowError) as err:
        resolve(day="20261028", now=NOW, **kwargs)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_day_check_uses_the_box_zone_not_utc():
    late = at("2026-10-28T23:30:00+01:00")  # 22:30Z on the 28th; the 29th in Tokyo
    assert resolve(day="20261028", now=NOW, class_start=late, rule=Rule(1)).class_start == late
    with pytest.raises(WindowError, match="booking_data.day"):
        resolve(day="20261028", now=NOW, class_start=late, zone="Asia/Tokyo", rule=Rule(1))
