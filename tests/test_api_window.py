"""POST /api/prebookings with the class start and the box's rule instead of available_at."""

from datetime import UTC, datetime

import pytest
from freezegun import freeze_time

from tests.factories import BOX_ID


def body(**overrides):
    data = {
        "user_email": "ana@example.com",
        "class_start": "2026-10-28T08:00:00+01:00",
        "opens_days_before": 4,
        "booking_data": {
            "box": "crossfitbox",
            "box_id": BOX_ID,
            "class_id": "7",
            "day": "20261028",
        },
    }
    return data | overrides


def post(client, auth, **overrides):
    with freeze_time("2026-10-01T12:00:00Z"):
        return client.post("/api/prebookings", json=body(**overrides), headers=auth)


def test_window_is_computed_from_the_class_start_dst_aware(client, auth):
    resp = post(client, auth)
    assert resp.status_code == 201, resp.json
    made = resp.json
    # Reference §1.7: 28 Oct 08:00 Madrid (UTC+1), 4 days before: 24 Oct 08:00 (UTC+2) = 06:00Z.
    assert datetime.fromisoformat(made["available_at"]) == datetime(2026, 10, 24, 6, tzinfo=UTC)
    assert datetime.fromisoformat(made["class_start"]) == datetime(2026, 10, 28, 7, tzinfo=UTC)
    assert made["box_timezone"] == "Europe/Madrid"
    assert made["booking_data"]["box_id"] == BOX_ID
    again = client.get(f"/api/prebookings/{made['id']}", headers=auth).json
    assert again["available_at"] == made["available_at"]


def test_hours_rule_and_another_zone(client, auth):
    resp = post(
        client,
        auth,
        class_start="2026-10-28T08:00:00-04:00",
        box_timezone="America/New_York",
        opens_days_before=None,
        opens_hours_before=72,
    )
    assert resp.status_code == 201, resp.json
    assert datetime.fromisoformat(resp.json["available_at"]) == datetime(
        2026, 10, 25, 12, tzinfo=UTC
    )


def test_spring_forward_gap_through_the_api(client, auth):
    with freeze_time("2026-03-01T00:00:00Z"):
        resp = client.post(
            "/api/prebookings",
            json=body(
                class_start="2026-04-01T02:30:00+02:00",
                opens_days_before=3,
                booking_data={"box": "b", "class_id": "7", "day": "20260401"},
            ),
            headers=auth,
        )
    assert resp.status_code == 201, resp.json
    # 29 Mar 02:30 does not exist in Madrid; read as 03:30 CEST = 01:30Z.
    assert resp.json["available_at"] == "2026-03-29T01:30:00+00:00"


def test_available_at_agreeing_with_the_rule_is_accepted(client, auth):
    resp = post(client, auth, available_at="2026-10-24T08:00:00+02:00")
    assert resp.status_code == 201, resp.json


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"box_timezone": "Mars/Olympus"}, "box_timezone"),
        ({"box_timezone": "../../etc/passwd"}, "box_timezone"),
        ({"class_start": "2026-09-28T08:00:00+01:00", "booking_data": None}, "class_start"),
        ({"class_start": None, "opens_days_before": None}, "available_at"),
        ({"opens_days_before": None}, "opens_days_before"),
        ({"class_start": None}, "opens_days_before"),
        ({"available_at": "2026-10-24T08:00:00+01:00"}, "available_at"),
        ({"class_start": "2026-10-29T08:00:00+01:00"}, "booking_data.day"),
        ({"opens_days_before": -1}, "opens_days_before"),
        ({"opens_days_before": True}, "opens_days_before"),
        ({"opens_days_before": "4"}, "opens_days_before"),
        ({"opens_hours_before": 1e9}, "opens_hours_before"),
        ({"class_start": "2026-10-28T08:00:00"}, "class_start"),
        (
            {"booking_data": {"box": "b", "box_id": "10a", "class_id": "7", "day": "20261028"}},
            "box_id",
        ),
        (
            {"booking_data": {"box": "b", "box_id": 10122, "class_id": "7", "day": "20261028"}},
            "box_id",
        ),
    ],
)
def test_bad_window_input_is_422_naming_the_field(client, auth, change, field):
    if change.get("booking_data", {}) is None:
        change = change | {"booking_data": body()["booking_data"] | {"day": "20260928"}}
    resp = post(client, auth, **change)
    assert resp.status_code == 422, resp.json
    assert field in resp.json["error"]
    assert any(field in detail["field"] for detail in resp.json["details"])


def test_box_id_is_optional(client, auth):
    data = {"box": "b", "class_id": "7", "day": "20261028"}
    resp = post(client, auth, booking_data=data)
    assert resp.status_code == 201, resp.json
    assert resp.json["booking_data"]["box_id"] is None
