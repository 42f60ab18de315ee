"""result_expires and arrivals retention: one daily beat entry, and the parity window's cap."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update

from flask_app.models import Arrival
from flask_app.shim import AsyncResult, backend, chord, shared_task, states
from flask_app.shim.builtins import backend_cleanup
from flask_app.shim.flask import BACKEND_CLEANUP
from flask_app.shim.models import TaskChord, TaskResult
from tests.conftest import API_TOKEN
from tests.factories import make_prebooking
from tests.shim.helpers import deliver


@shared_task(name="cleanup.add")
def add(x, y):
    return x + y


@shared_task(name="cleanup.tsum")
def tsum(values):
    return sum(values)


def test_result_expires_installs_celerys_daily_cleanup_entry(app):
    entry = app.extensions["celery"].conf.beat_schedule[BACKEND_CLEANUP]
    assert entry["task"] == BACKEND_CLEANUP
    assert entry["schedule"].to_cron() == "0 4 * * *"
    assert app.extensions["celery"].conf.result_expires == timedelta(days=1)


def _age(app, model, column, key, when):
    with app.extensions["db"].session() as session:
        session.execute(update(model).where(key).values({column: when}))
        session.commit()


def _arrival(session, when):
    prebooking = make_prebooking(session)
    session.add(
        Arrival(
            prebooking_id=prebooking.id,
            path="qstash",
            arrived_at=when,
            available_at=when,
            lateness_ms=0.0,
            action="executed",
        )
    )
    session.commit()


def test_the_cleanup_deletes_expired_results_chords_and_old_arrivals(app, client, gateway, session):
    now = datetime.now(UTC)
    old, fresh = add.delay(1, 1), add.delay(2, 2)
    pending = add.delay(3, 3)
    res = chord([add.s(1, 2)], tsum.s()).apply_async()
    published = gateway.take()
    for message_id, msg in published:
        if msg.body["id"] != pending.id:
            deliver(client, message_id, msg)
    for message_id, msg in gateway.take():
        deliver(client, message_id, msg)
    assert res.get(timeout=1) == 3
    two_days_ago = now - timedelta(days=2)
    _age(app, TaskResult, "date_done", TaskResult.task_id.in_([old.id, res.id]), two_days_ago)
    _age(app, TaskChord, "created_at", TaskChord.group_id.is_not(None), two_days_ago)
    _arrival(session, now - timedelta(days=91))
    _arrival(session, now - timedelta(days=89))

    with app.app_context():
        deleted = backend_cleanup()

    assert deleted == {"results": 2, "chords": 1}
    assert AsyncResult(old.id).state == states.PENDING  # forgotten
    assert AsyncResult(fresh.id).get() == 4 and backend.get(app, pending.id) is not None
    assert session.scalar(select(func.count()).select_from(Arrival)) == 1


def test_arrivals_retention_is_a_setting(app_config, session):
    from flask_app import close, create_app

    app = create_app(app_config | {"ARRIVALS_RETENTION_DAYS": 10})
    _arrival(session, datetime.now(UTC) - timedelta(days=11))
    with app.app_context():
        backend_cleanup()
    assert session.scalar(select(func.count()).select_from(Arrival)) == 0
    close(app)


def test_a_parity_report_cannot_reach_past_the_arrivals_retention(client):
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    assert client.get("/api/parity?since=89d", headers=auth).status_code == 200
    refused = client.get("/api/parity?since=91d", headers=auth)
    assert refused.status_code == 422  # as any since the report cannot cover
    assert "ARRIVALS_RETENTION_DAYS" in refused.json["error"] and "90 days" in refused.json["error"]
