"""The transactional outbox, the background runner, and the QStash-only paths with a fake Gateway.

Cron is off in every app here (QSTASH_ENABLED=true, LEGACY_CRON_ENABLED=false), on SQLite and
PostgreSQL; time is passed in (`run_once(now)`), so nothing waits.
"""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from flask_app import close, create_app
from flask_app.background import get_runner, take_lease
from flask_app.models import OutboxEntry
from flask_app.qstash import dlq, outbox
from flask_app.shim.flask import get_celery
from tests.factories import booking_data, make_prebooking, reload
from tests.fake_gateway import DlqEntry, FakeGateway

EMAIL = "ana@example.com"
BASE = "https://prebook.example.com"


@pytest.fixture
def gateway():
    return FakeGateway()


@pytest.fixture
def app_overrides(gateway):
    return {
        "QSTASH_GATEWAY": gateway,
        "QSTASH_ENABLED": True,
        "LEGACY_CRON_ENABLED": False,
        "APP_BASE_URL": BASE,
    }


def create(client, auth, available_at):
    body = {
        "user_email": EMAIL,
        "available_at": available_at.isoformat(),
        "booking_data": booking_data(),
    }
    return client.post("/api/prebookings", json=body, headers=auth)


def entries(session):
    session.expire_all()
    return list(session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)))


def drain(app, now):
    """One pass of the runner's outbox job, as at `now`."""
    with app.app_context():
        return outbox.drain(now)


def test_a_window_already_open_at_create_is_published_with_no_delay(client, auth, gateway):
    resp = create(client, auth, datetime.now(UTC) - timedelta(seconds=2))
    assert resp.status_code == 201 and resp.json["qstash_message_id"] == "msg_fake_1"
    [msg] = gateway.published
    assert msg.not_before is None and msg.delay_s is None  # QStash delivers at once


def test_a_published_create_leaves_nothing_owed(client, auth, session):
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=1))
    assert resp.json["qstash_message_id"] == "msg_fake_1"
    assert entries(session) == []


def test_qstash_down_at_create_is_owed_and_retried_within_seconds(
    app, client, auth, gateway, session
):
    gateway.down = True
    resp = create(client, auth, datetime.now(UTC) + timedelta(seconds=20))
    assert resp.status_code == 201 and resp.json["qstash_message_id"] is None
    [owed] = entries(session)
    assert (owed.prebooking_id, owed.action, owed.attempts) == (resp.json["id"], "publish", 1)
    retry_at = owed.due_at
    assert drain(app, retry_at - timedelta(milliseconds=1))["published"] == 0  # backing off
    gateway.down = False
    assert get_runner(app).run_once(retry_at)["qstash-outbox"]["published"] == 1
    assert reload(session, resp.json["id"]).qstash_message_id == "msg_fake_1"
    assert entries(session) == []


def test_backoff_doubles_and_the_outbox_gives_up_after_its_attempts(
    app, client, auth, gateway, session
):
    app.config["OUTBOX_MAX_ATTEMPTS"] = 3
    gateway.down = True
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=1))
    waits = []
    for _ in range(2):
        [owed] = entries(session)
        waits.append(owed.due_at - datetime.now(UTC))
        drain(app, owed.due_at)
    [owed] = entries(session)
    assert owed.attempts == 3 and owed.gave_up_at is not None
    assert waits[1] > waits[0]
    row = reload(session, resp.json["id"])
    assert row.status == "pending"  # never lost: the relay and the dispatcher still cover it
    assert row.qstash_error.startswith("publish: gave up after 3 attempts: QStash unreachable")
    stats = get_runner(app).run_once(owed.due_at + timedelta(hours=1))["qstash-outbox-stats"]
    assert stats == {"owed": 0, "retrying": 0, "gave_up": 1}
    assert app.test_client().get("/api/health").json["outbox"] == stats


def test_the_inline_attempt_is_bounded_whatever_qstash_does(app, client, auth, gateway, session):
    app.config["OUTBOX_INLINE_S"] = 0.05
    gateway.hold = threading.Event()  # QStash accepts the connection and never answers
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=1))
    assert resp.status_code == 201 and resp.json["qstash_message_id"] is None
    assert not gateway.hold.is_set()  # answered while the call was still hanging
    [owed] = entries(session)
    assert owed.leased_by is not None  # the runner leaves it to the call in flight
    assert drain(app, datetime.now(UTC))["published"] == 0
    gateway.hold.set()
    for thread in threading.enumerate():
        if thread.name == "outbox-inline":
            thread.join()
    assert reload(session, resp.json["id"]).qstash_message_id == "msg_fake_1"
    assert entries(session) == []


def test_an_entry_has_one_claimant_across_processes(app, client, auth, gateway, session):
    gateway.down = True
    create(client, auth, datetime.now(UTC) + timedelta(hours=1))
    [owed] = entries(session)
    settings = outbox.OutboxSettings()
    first = outbox.claim(session, owed.due_at, "a", settings)
    second = outbox.claim(session, owed.due_at, "b", settings)
    assert (first, second) == ([owed.id], [])


def test_a_cancel_goes_through_the_outbox_and_is_retried(app, client, auth, gateway, session):
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=2))
    gateway.down = True
    assert client.delete(f"/api/prebookings/{resp.json['id']}", headers=auth).status_code == 200
    [owed] = entries(session)
    assert (owed.action, owed.message_id) == ("cancel", "msg_fake_1")
    gateway.down = False
    assert drain(app, owed.due_at)["cancelled"] == 1
    assert gateway.cancelled == ["msg_fake_1"] and entries(session) == []


def test_a_change_and_what_it_owes_commit_together(app, client, auth, gateway, session):
    gateway.broken = True  # the inline attempt dies of a bug: the entry must still be there
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=1))
    assert resp.status_code == 201
    [owed] = entries(session)
    assert owed.prebooking_id == resp.json["id"]


def dead(row, status=503, body="aimharder answered 503"):
    return DlqEntry(
        dlq_id=f"dlq-{row.id}-{row.qstash_generation}",
        message_id=row.qstash_message_id,
        url=f"{BASE}/api/qstash/prebooking-execute",
        body=f'{{"prebookingId": "{row.id}", "userEmail": "{row.user_email}"}}',
        response_status=status,
        response_body=body,
    )


def test_with_cron_off_a_dead_letter_is_republished_a_bounded_number_of_times_then_fails(
    app, session, gateway
):
    now = datetime.now(UTC)
    row = make_prebooking(session, available_at=now + timedelta(seconds=30), qstash_message_id="m0")
    outcomes = []
    for _ in range(dlq.MAX_REPUBLISH + 1):
        row = reload(session, row.id)
        gateway.dlq.append(dead(row))
        with app.app_context():
            outcomes.append(dict(dlq.reconcile_dlq(session, now).outcomes))
    assert outcomes == [{"republished": 1}] * dlq.MAX_REPUBLISH + [{"failed": 1}]
    dedup = [m.deduplication_id for m in gateway.published]
    assert dedup == [f"{row.id}-g1", f"{row.id}-g2"]  # fresh ids: not the dead message again
    row = reload(session, row.id)
    assert row.status == "failed" and row.qstash_dlq_count == dlq.MAX_REPUBLISH + 1
    assert row.error_message.startswith("dead-lettered by QStash 3 times (DLQ); last: QStash")


def test_the_dlq_reconcile_runs_from_the_background_runner_in_one_process(app, app_config, gateway):
    other = create_app(app_config)
    try:
        ran = [a for a in (app, other) if "qstash-dlq" in get_runner(a).run_once()]
    finally:
        close(other)
    assert ran == [app]


def test_a_job_lease_is_taken_by_one_holder_and_again_for_a_new_version(app, session):
    now = datetime.now(UTC)
    ttl = timedelta(minutes=10)
    assert take_lease(session, "job", "a", now, ttl, "v1")
    assert not take_lease(session, "job", "b", now, ttl, "v1")
    assert take_lease(session, "job", "a", now, ttl, "v1")  # its holder renews it
    assert take_lease(session, "job", "b", now, ttl, "v2")  # a deploy that changed it
    assert take_lease(session, "job", "c", now + ttl * 2, ttl, "v2")  # expired


def test_schedules_are_created_at_start_by_one_process_and_health_shows_them(
    app, app_config, gateway
):
    assert app.test_client().get("/api/health").json["schedules"] is None  # not checked yet
    get_runner(app).run_once()
    beat = get_celery(app).conf.beat_schedule  # the service's entries and the shim's cleanup
    assert sorted(gateway.schedules_by_id) == sorted(f"shim-{name}" for name in beat)
    assert "shim-relay-prebookings" in gateway.schedules_by_id
    shown = app.test_client().get("/api/health").json["schedules"]
    assert shown["all_present"] is True and shown["entries"]["relay-prebookings"] == "present"
    other = create_app(app_config)
    try:
        ran = get_runner(other).run_once()
    finally:
        close(other)
    assert "qstash-schedules" not in ran  # the lease: one instance syncs
    assert ran["qstash-schedules-check"]["all_present"] is True


def test_a_check_that_finds_a_schedule_missing_creates_it_without_waiting_for_the_lease(
    app, app_config, gateway
):
    """A restarted process may wait SYNC_INTERVAL for the sync's lease (the dead process held
    it); a QStash that lost its schedules meanwhile gets them back from the first check."""
    get_runner(app).run_once()  # the process before the restart synced, and holds the lease
    gateway.schedules_by_id.clear()  # QStash lost them (qstash_dev restarted, or deleted)
    restarted = create_app(app_config)
    try:
        ran = get_runner(restarted).run_once()
    finally:
        close(restarted)
    assert "qstash-schedules" not in ran  # the sync's lease is still held: not its turn
    assert ran["qstash-schedules-check"]["entries"]["relay-prebookings"] == "present"
    assert "shim-relay-prebookings" in gateway.schedules_by_id


def test_a_deploy_deletes_the_per_minute_schedules_an_earlier_version_created(app, gateway):
    """The DLQ and stale claims moved to the background runner: their QStash schedules (1,536
    messages a day, more than the free plan's 1,000) go at the next sync."""
    for entry in ("reconcile-dlq", "recover-stale-claims"):
        gateway.upsert_schedule(
            schedule_id=f"shim-{entry}", destination="https://old.example/x", cron="* * * * *",
            body={},
        )  # fmt: skip
    get_runner(app).run_once()
    assert "shim-relay-prebookings" in gateway.schedules_by_id
    assert not {"shim-reconcile-dlq", "shim-recover-stale-claims"} & set(gateway.schedules_by_id)


def test_a_publish_qstash_refuses_is_not_retried_for_minutes(app, client, auth, gateway, session):
    gateway.reject = True
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=1))
    [owed] = entries(session)
    assert owed.gave_up_at is not None and owed.attempts == 1  # a 4xx will not do better later
    assert reload(session, resp.json["id"]).qstash_error.startswith("publish: gave up after 1")


def test_a_cancel_waits_for_a_publish_still_in_flight(app, client, auth, gateway, session):
    app.config["OUTBOX_INLINE_S"] = 0.05
    gateway.hold = threading.Event()
    resp = create(client, auth, datetime.now(UTC) + timedelta(hours=1))
    assert client.delete(f"/api/prebookings/{resp.json['id']}", headers=auth).status_code == 200
    cancel = entries(session)[-1]
    assert cancel.action == "cancel" and cancel.last_error.endswith("still in flight")
    gateway.hold.set()
    for thread in threading.enumerate():
        if thread.name == "outbox-inline":
            thread.join()
    assert drain(app, cancel.due_at)["cancelled"] == 1
    assert gateway.cancelled == ["msg_fake_1"] and entries(session) == []
