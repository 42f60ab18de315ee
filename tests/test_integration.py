"""Both paths run the prebooking.execute shim task; the tick relays; metrics see it all."""

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flask_app.models import Prebooking
from flask_app.periodic import BEAT_SCHEDULE, recover_stale_claims, relay_prebookings
from flask_app.shim import signals
from flask_app.shim.flask import get_celery
from flask_app.tasks import execute_prebooking, restore, summarize
from tests.conftest import CRON_SECRET
from tests.factories import make_prebooking, store_session
from tests.fake_gateway import FakeGateway
from tests.test_callbacks import body_for, deliver

CRON = {"Authorization": f"Bearer {CRON_SECRET}"}
TICK = "/api/cron/prebooking-scheduler"


@pytest.fixture
def gateway():
    return FakeGateway()


@pytest.fixture
def app_overrides(gateway):
    return {
        "QSTASH_GATEWAY": gateway,
        "QSTASH_ENABLED": True,
        "APP_BASE_URL": "https://prebook.example.com",
    }


@pytest.fixture
def session(app):
    with app.extensions["db"].session() as s:
        store_session(app, s)
        yield s


def samples(client, name):
    text = client.get("/metrics").get_data(as_text=True)
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def test_webhook_and_cron_tick_both_run_the_shim_task(client, session, booking_client):
    via_qstash = make_prebooking(session, qstash_message_id="msg_1")
    via_cron = make_prebooking(session, booking_data=via_qstash.booking_data | {"class_id": "2"})
    seen = []

    def prerun(sender=None, task_id=None, task=None, args=None, **kwargs):
        seen.append((args[0], args[1]))

    signals.task_prerun.connect(prerun, sender=execute_prebooking, weak=False)
    try:
        assert deliver(client, body_for(via_qstash)).status_code == 200
        assert client.post(TICK, headers=CRON).json["booked"] == 1
    finally:
        signals.task_prerun.disconnect(prerun, sender=execute_prebooking)
    assert seen == [(via_qstash.id, "qstash"), (via_cron.id, "cron")]
    assert len(booking_client.calls) == 2


def test_metrics_count_task_runs_webhook_answers_and_publish_errors(client, session, gateway, auth):
    due = make_prebooking(session, qstash_message_id="msg_1")
    deliver(client, body_for(due))
    deliver(client, body_for(due), signed=b"forged")
    gateway.down = True
    opening = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    made = client.post(
        "/api/prebookings",
        headers=auth,
        json={
            "user_email": "ana@example.com",
            "available_at": opening,
            "booking_data": {"box": "sandbox", "class_id": "9", "day": "20261130"},
        },
    )
    assert made.status_code == 201 and made.json["qstash_message_id"] is None
    runs = samples(client, "prebooking_task_runs_total")
    assert ({"path": "qstash", "state": "SUCCESS"}, 1.0) in runs
    answers = dict((s["status"], v) for s, v in samples(client, "qstash_webhook_responses_total"))
    assert answers == {"200": 1.0, "401": 1.0}
    assert samples(client, "qstash_publish_errors_total") == [({"kind": "unavailable"}, 1.0)]


def test_cron_tick_relays_prebookings_that_came_within_qstash_reach(client, session, gateway):
    later = make_prebooking(session, available_at=datetime.now(UTC) + timedelta(days=2))
    response = client.post(TICK, headers=CRON)
    assert response.json["relayed"] == 1
    session.refresh(later)
    assert later.qstash_message_id is not None
    assert gateway.published[0].body["prebookingId"] == later.id


def test_beat_schedule_holds_the_relay_and_dlq_jobs(app):
    schedule = get_celery(app).conf.beat_schedule
    assert {name: schedule[name]["task"] for name in BEAT_SCHEDULE} == {
        "relay-prebookings": "prebooking.relay",
        "reconcile-dlq": "qstash.reconcile_dlq",
        "recover-stale-claims": "prebooking.recover_stale",
        "gym-preflight": "gym.preflight",
    }


def test_relay_task_publishes_through_the_shim(app, session, gateway):
    make_prebooking(session, available_at=datetime.now(UTC) + timedelta(days=3))
    with app.app_context():
        result = relay_prebookings.apply().get()
    assert result["published"] == 1 and len(gateway.published) == 1


def test_attempt_summary_round_trips(app, session):
    due = make_prebooking(session, qstash_message_id="msg_1")
    with app.app_context():
        attempt = restore(execute_prebooking.apply(args=(due.id, "cron")).get())
    assert restore(summarize(attempt)) == attempt
    assert attempt.won and attempt.path == "cron"


@pytest.mark.parametrize("legacy_cron", [False])
def test_stale_claims_are_recovered_without_cron_and_never_double_booked(
    app, session, booking_client, legacy_cron
):
    app.config["LEGACY_CRON_ENABLED"] = legacy_cron
    past = datetime.now(UTC) - timedelta(minutes=5)
    crashed = make_prebooking(
        session,
        status="loaded",
        claimed_by="qstash:dead:1:x",
        claim_expires_at=past,
        book_sent_at=past,
        executed_by="qstash",
    )
    live = make_prebooking(
        session,
        status="loaded",
        claimed_by="qstash:alive:2:y",
        claim_expires_at=datetime.now(UTC) + timedelta(minutes=1),
    )
    booking_client.booked_listing = True  # the dead worker's request had reached AimHarder
    with app.app_context():
        assert recover_stale_claims.apply().get() == {"confirmed": 1}
    session.expire_all()
    assert session.get(Prebooking, crashed.id).status == "completed"
    assert session.get(Prebooking, live.id).status == "loaded"
    assert booking_client.calls == []
