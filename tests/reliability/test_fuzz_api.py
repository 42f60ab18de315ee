"""Scenario: fuzzed API input. Whatever a caller sends, the answer is never a 5xx."""

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_app import create_app
from tests.fake_gateway import FakeGateway

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
field_values = {
    "user_email": st.emails() | st.text(max_size=30) | json_values,
    "available_at": st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
    | st.text(max_size=30)
    | json_values,
    "booking_data": st.fixed_dictionaries(
        {},
        optional={
            "box": st.from_regex(r"[a-z0-9-]{0,70}", fullmatch=True) | json_values,
            "class_id": st.text(alphabet=string.printable, max_size=70) | json_values,
            "day": st.from_regex(r"\d{8}", fullmatch=True) | st.text(max_size=10) | json_values,
            "family_id": st.none() | st.text(max_size=70) | json_values,
        },
    )
    | json_values,
}
bodies = st.fixed_dictionaries({}, optional=field_values) | json_values


@pytest.fixture
def app_overrides():
    return {"QSTASH_ENABLED": True, "QSTASH_GATEWAY": FakeGateway()}


SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(body=bodies)
def test_create_never_answers_5xx(client, auth, body):
    resp = client.post("/api/prebookings", json=body, headers=auth)
    assert resp.status_code < 500, resp.json
    assert resp.status_code == 201 or "error" in resp.json


@SETTINGS
@given(
    raw=st.binary(max_size=300),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
    ),
)
def test_raw_bytes_never_answer_5xx(client, auth, raw, content_type):
    resp = client.post("/api/prebookings", data=raw, content_type=content_type, headers=auth)
    assert 400 <= resp.status_code < 500


@SETTINGS
@given(
    query=st.dictionaries(
        st.sampled_from(["status", "user_email", "limit", "cursor", "x"]),
        st.text(max_size=40),
        max_size=4,
    )
)
def test_list_queries_never_answer_5xx(client, auth, query):
    resp = client.get("/api/prebookings", query_string=query, headers=auth)
    assert resp.status_code in (200, 422), resp.json


@SETTINGS
@given(email=st.text(max_size=60), body=bodies)
def test_session_puts_never_answer_5xx(client, auth, email, body):
    resp = client.put(f"/api/sessions/{email}", json=body, headers=auth)
    assert resp.status_code < 500, resp.json


@SETTINGS
@given(pid=st.text(max_size=60))
def test_get_and_cancel_of_any_id_never_answer_5xx(client, auth, pid):
    for method in (client.get, client.delete):
        resp = method(f"/api/prebookings/{pid}", headers=auth)
        assert resp.status_code < 500, resp.json


def test_fuzz_app_factory_is_importable():
    # The fuzz tests above run against the `app` fixture (SQLite and PostgreSQL).
    assert callable(create_app)
