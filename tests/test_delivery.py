"""The QStash path's publishing side with a fake Gateway: create, cancel, relay, DLQ."""

import math
from datetime import UTC, datetime, timedelta

import pytest

from flask_app.core.execution import Action, get_executor
from flask_app.qstash import dlq, relay
from flask_app.qstash.planning import is_in_rollout
from tests.factories import booking_data, make_prebooking, reload, store_session
from tests.fake_gateway import DlqEntry, FakeGateway

EMAIL = "ana@example.com"


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


def create(client, auth, available_at, email=EMAIL):
    body = {
        "user_email": email,
        "available_at": available_at.isoformat(),
        "booking_data": booking_data(),
    }
    return client.post("/api/prebookings", json=body, headers=auth)


def test_creating_a_prebooking_publishes_one_message_and_shows_its_id(client, auth, gateway):
    opens = datetime.now(UTC) + timedelta(hours=2)
    resp = create(client, auth, opens)
    assert resp.status_code == 201
    assert resp.json["qstash_message_id"] == "msg_fake_1"
    [msg] = gateway.published
    assert msg.url == "https://prebook.example.com/api/qstash/prebooking-execute"
    assert msg.body == {
        "prebookingId": resp.json["id"],
        "userEmail": EMAIL,
        "scheduledAt": opens.isoformat(),
    }
    assert msg.deduplication_id == resp.json["id"]
    assert msg.not_before == math.floor((opens - timedelta(seconds=3)).timestamp())
    assert msg.retries == 3 and msg.retry_delay == "200 * (1 + retried)"


def test_message_id_is_stored_on_the_prebooking(client, auth, session):
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=2))
    row = reload(session, resp.json["id"])
    assert (row.qstash_message_id, row.qstash_error) == ("msg_fake_1", None)


def test_nothing_is_published_when_qstash_is_disabled(app, client, auth, gateway):
    app.config["QSTASH_ENABLED"] = False
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=2))
    assert resp.status_code == 201
    assert resp.json["qstash_message_id"] is None and gateway.published == []


def test_shadow_mode_publishes_so_deliveries_can_be_observed(app, client, auth, gateway):
    app.config.update(QSTASH_ENABLED=False, QSTASH_SHADOW=True)
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=2))
    assert resp.json["qstash_message_id"] == "msg_fake_1"


@pytest.mark.parametrize(("percent", "published"), [(0, False), (100, True)])
def test_rollout_percent_decides_who_is_published(app, client, auth, gateway, percent, published):
    app.config["QSTASH_ROLLOUT_PERCENT"] = percent
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=2))
    assert resp.status_code == 201
    assert (resp.json["qstash_message_id"] is not None) is published
    assert len(gateway.published) == int(published)


def test_rollout_hash_is_stable_and_proportional():
    emails = [f"user{i}@example.com" for i in range(2000)]
    first = [is_in_rollout(e, 30) for e in emails]
    assert first == [is_in_rollout(e.upper(), 30) for e in emails]
    assert 450 < sum(first) < 750
    assert all(is_in_rollout(e, 100) for e in emails)
    assert not any(is_in_rollout(e, 0) for e in emails)
    # Raising the percentage only adds users.
    assert all(is_in_rollout(e, 60) for e, inside in zip(emails, first, strict=True) if inside)


def test_qstash_down_at_create_still_saves_answers_201_and_cron_books_it_later(
    app, client, auth, gateway, session, booking_client
):
    gateway.down = True
    resp = create(client, auth, datetime.now(UTC) + timedelta(seconds=1))
    assert resp.status_code == 201 and resp.json["qstash_message_id"] is None
    row = reload(session, resp.json["id"])
    assert row.status == "pending"
    assert row.qstash_error.startswith("publish: QStash unreachable")
    store_session(app, session)
    attempt = get_executor(app).attempt(row.id, path="cron")
    assert attempt.action is Action.EXECUTED
    assert reload(session, row.id).executed_by == "cron"
    assert len(booking_client.calls) == 1


def test_an_unexpected_publish_failure_still_answers_201_with_the_prebooking_saved(
    client, auth, gateway, session
):
    gateway.broken = True
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=1))
    assert resp.status_code == 201 and resp.json["qstash_message_id"] is None
    assert reload(session, resp.json["id"]).status == "pending"


def test_relay_publishes_a_failed_publish_once_qstash_is_back(app, client, auth, gateway, session):
    gateway.down = True
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=1))
    gateway.down = False
    with app.app_context():
        report = relay.relay(session, datetime.now(UTC))
    assert report.published == 1
    assert reload(session, resp.json["id"]).qstash_message_id == "msg_fake_1"


def test_beyond_max_delay_gets_no_message_now_and_the_relay_publishes_it_later(
    app, client, auth, gateway, session
):
    opens = datetime.now(UTC) + timedelta(days=9)
    resp = create(client, auth, opens)
    assert resp.status_code == 201 and resp.json["qstash_message_id"] is None
    assert gateway.published == []
    with app.app_context():
        early = relay.relay(session, datetime.now(UTC) + timedelta(days=1))
        assert early.published == 0
        later = datetime.now(UTC) + timedelta(days=2, hours=1)
        assert relay.relay(session, later).published == 1
    [msg] = gateway.published
    assert msg.not_before == math.floor((opens - timedelta(seconds=3)).timestamp())
    assert reload(session, resp.json["id"]).qstash_message_id == "msg_fake_1"


def _lead_s(opens, msg):
    return opens.replace(microsecond=0).timestamp() - msg.not_before


def test_a_crowd_created_for_one_instant_is_due_spread_in_creation_order(
    app, client, auth, gateway
):
    app.config["QSTASH_CROWD_LEAD_MS"] = 1000  # a second per twin, to read it off not_before
    opens = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    first = create(client, auth, opens, email="a@example.com").json
    # A cancelled twin still holds its rank, as in the webhook's FIFO rank.
    assert client.delete(f"/api/prebookings/{first['id']}", headers=auth).status_code == 200
    create(client, auth, opens, email="b@example.com")
    create(client, auth, opens, email="c@example.com")
    create(client, auth, opens + timedelta(seconds=1), email="d@example.com")  # another instant
    leads = [_lead_s(opens, msg) for msg in gateway.published]
    assert leads == [3, 4, 5, 3 - 1]


def test_the_relay_spreads_a_crowd_like_the_create_path(app, client, auth, gateway, session):
    app.config["QSTASH_CROWD_LEAD_MS"] = 1000
    opens = (datetime.now(UTC) + timedelta(days=9)).replace(microsecond=0)
    ids = [create(client, auth, opens, email=f"u{i}@example.com").json["id"] for i in range(3)]
    assert gateway.published == []  # beyond the max delay at create
    with app.app_context():
        assert relay.relay(session, opens - timedelta(days=6)).published == 3
    by_id = {msg.body["prebookingId"]: msg for msg in gateway.published}
    assert [_lead_s(opens, by_id[pid]) for pid in ids] == [3, 4, 5]


def test_max_delay_is_configurable(app, client, auth, gateway):
    app.config["QSTASH_MAX_DELAY"] = timedelta(hours=1)
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=2))
    assert resp.json["qstash_message_id"] is None and gateway.published == []


def test_relay_skips_cancelled_published_and_out_of_rollout_prebookings(app, session, gateway):
    now = datetime.now(UTC)
    soon = now + timedelta(hours=1)
    make_prebooking(session, available_at=soon, status="cancelled")
    make_prebooking(session, available_at=soon, qstash_message_id="msg_old")
    make_prebooking(session, available_at=soon, qstash_error="dlq: gave up")
    make_prebooking(session, available_at=now - timedelta(minutes=1))
    app.config["QSTASH_ROLLOUT_PERCENT"] = 0
    fresh = make_prebooking(session, available_at=soon)
    with app.app_context():
        report = relay.relay(session, now)
    assert report.published == 0 and report.skipped == {"not_in_rollout": 1}
    assert reload(session, fresh.id).qstash_message_id is None


def test_relay_pages_through_many_prebookings_in_batches(app, session, gateway):
    now = datetime.now(UTC)
    for i in range(relay.RELAY_BATCH + 5):
        make_prebooking(session, available_at=now + timedelta(minutes=10, seconds=i % 3))
    with app.app_context():
        assert relay.relay(session, now).published == relay.RELAY_BATCH + 5
    assert len({m.deduplication_id for m in gateway.published}) == relay.RELAY_BATCH + 5


def test_cancelling_a_prebooking_cancels_its_message(client, auth, gateway):
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=2))
    done = client.delete(f"/api/prebookings/{resp.json['id']}", headers=auth)
    assert done.status_code == 200 and done.json["status"] == "cancelled"
    assert gateway.cancelled == [resp.json["qstash_message_id"]]


def test_cancellation_stands_when_qstash_cannot_cancel_the_message(client, auth, gateway, session):
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=2))
    gateway.down = True
    done = client.delete(f"/api/prebookings/{resp.json['id']}", headers=auth)
    assert done.status_code == 200
    assert reload(session, resp.json["id"]).status == "cancelled"


def dead(row, status=500, body="boom"):
    return DlqEntry(
        dlq_id=f"dlq-{row.id}",
        message_id=row.qstash_message_id or "msg_x",
        url="https://prebook.example.com/api/qstash/prebooking-execute",
        body=f'{{"prebookingId": "{row.id}", "userEmail": "{row.user_email}"}}',
        response_status=status,
        response_body=body,
    )


def test_reconcile_dlq_fails_a_prebooking_whose_window_is_long_gone(app, session, gateway):
    now = datetime.now(UTC)
    row = make_prebooking(session, available_at=now - timedelta(hours=1), qstash_message_id="m1")
    gateway.dlq.append(dead(row, 401, "invalid signature"))
    with app.app_context():
        report = dlq.reconcile_dlq(session, now)
    assert report.outcomes == {"failed": 1}
    row = reload(session, row.id)
    assert row.status == "failed"
    reason = "QStash gave up delivering (last answer 401: invalid signature)"
    assert row.error_message == f"dead-lettered by QStash 1 time (DLQ); last: {reason}"
    assert (row.qstash_dlq_count, row.qstash_dlq_reason) == (1, reason)
    assert gateway.dlq == []


def test_reconcile_dlq_leaves_executed_rows_and_foreign_entries_alone(app, session, gateway):
    row = make_prebooking(session, status="completed", qstash_message_id="m1")
    gateway.dlq.append(dead(row))
    foreign = DlqEntry("dlq-other", "m2", "https://elsewhere.example.com/hook", "{}", 500)
    gateway.dlq.append(foreign)
    with app.app_context():
        report = dlq.reconcile_dlq(session, datetime.now(UTC))
    assert report.outcomes == {"already_completed": 1}
    assert reload(session, row.id).status == "completed"
    assert gateway.dlq == [foreign]


def test_reconcile_dlq_command_prints_what_it_did(app, runner, session, gateway):
    row = make_prebooking(session, available_at=datetime.now(UTC) - timedelta(hours=2))
    gateway.dlq.append(dead(row))
    result = runner.invoke(args=["qstash", "reconcile-dlq"])
    assert result.exit_code == 0, result.output
    assert '"failed": 1' in result.output and '"deleted": 1' in result.output


def test_relay_command_publishes(app, runner, session, gateway):
    make_prebooking(session, available_at=datetime.now(UTC) + timedelta(hours=3))
    result = runner.invoke(args=["qstash", "relay"])
    assert result.exit_code == 0, result.output
    assert '"published": 1' in result.output
