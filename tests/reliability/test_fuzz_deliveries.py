"""Scenario: fuzzed input behind the signature and on the other entry points; never a 5xx.

Fault: bodies QStash could never send, but signed with our key (a bug upstream, a leaked key,
a future protocol change) on the prebooking webhook and the shim's task endpoint; arbitrary
methods, queries, bodies and credentials on the cron endpoint; arbitrary `since` values.
Must hold: every answer is below 500 (a 5xx makes QStash retry forever and is a bug);
unreadable signed deliveries are refused as non-retryable (489 + Upstash-NonRetryable-Error).
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_app.qstash.planning import EXECUTE_PATH
from qstash_dev import signing

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ids = (
    st.uuids().map(str)
    | st.text(max_size=70)
    | st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
    | json_values
)
delivery_fields = {
    "prebookingId": ids,
    "userEmail": st.emails() | st.text(max_size=30) | json_values,
    "scheduledAt": st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
    | st.text(max_size=30)
    | json_values,
}
delivery_bodies = (
    st.fixed_dictionaries({}, optional=delivery_fields).map(lambda d: json.dumps(d).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
)
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def app_overrides():
    return {"TASK_IMPORTS": "examples.celery_app.shim_tasks", "QSTASH_ENABLED": True}


def signed(app, path, raw):
    url = app.config["APP_BASE_URL"].rstrip("/") + path
    sig = signing.sign(app.config["QSTASH_CURRENT_SIGNING_KEY"], url, raw)
    return {"Upstash-Signature": sig, "Content-Type": "application/json"}


@SETTINGS
@given(raw=delivery_bodies, retried=st.none() | st.from_regex(r"[ -~]{0,5}", fullmatch=True))
def test_signed_webhook_bodies_never_answer_5xx(app, client, raw, retried):
    headers = signed(app, EXECUTE_PATH, raw)
    if retried is not None:
        headers["Upstash-Retried"] = retried
    resp = client.post(EXECUTE_PATH, data=raw, headers=headers)
    assert resp.status_code < 500, resp.json
    if resp.status_code == 401:  # the verifier refuses what is not UTF-8, before parsing
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")
    elif resp.status_code == 489:
        assert resp.headers["Upstash-NonRetryable-Error"] == "true" and resp.json["error"]
    else:
        assert resp.status_code == 200 and resp.json["action"] in ("not_found", "skipped")


@SETTINGS
@given(
    name=st.sampled_from(["add_together", "process", "invoice", "skip_me"]) | st.text(max_size=30),
    raw=json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200),
)
def test_signed_task_deliveries_never_answer_5xx(app, client, name, raw):
    from urllib.parse import quote

    path = "/api/qstash/tasks/" + quote(name, safe="")
    if "/api/qstash/tasks/" + name != path and not name:
        return
    resp = client.post(path, data=raw, headers=signed(app, path, raw))
    assert resp.status_code < 500, (name, raw, resp.get_data(as_text=True)[:300])


@SETTINGS
@given(
    since=st.text(max_size=40)
    | st.from_regex(r"-?\d{1,12}(ms|s|m|h|d|w)?", fullmatch=True)
    | st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
)
def test_parity_since_never_answers_5xx(client, auth, since):
    resp = client.get("/api/parity", query_string={"since": since}, headers=auth)
    assert resp.status_code in (200, 400, 422), resp.get_data(as_text=True)[:300]
