"""The prebooking execution as a shim task: both paths observed through the task signals."""

from datetime import UTC, datetime, timedelta

import pytest

from flask_app.aimharder.client import BookingOutcome
from flask_app.models import Prebooking
from flask_app.shim import AsyncResult, states
from flask_app.tasks import execute_prebooking
from tests.factories import make_prebooking, store_session
from tests.fakes import FakeClock

NOW = datetime(2026, 11, 30, 15, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock():
    return FakeClock(NOW - timedelta(seconds=2))


@pytest.fixture
def app_overrides(gateway, clock):
    return {
        "QSTASH_GATEWAY": gateway,
        "APP_BASE_URL": "http://app.test",
        "CLOCK": clock,
        "TASK_STORE_EAGER_RESULT": True,
    }


@pytest.fixture
def due(app):
    with app.extensions["db"].session() as session:
        store_session(app, session)
        return make_prebooking(session, available_at=NOW)


def test_task_is_registered_under_its_contract_name(app):
    assert execute_prebooking.name == "prebooking.execute"
    assert app.extensions["celery"].tasks["prebooking.execute"] is execute_prebooking


def test_eager_apply_books_fires_signals_with_the_prebooking_id_and_stores_the_result(
    app, due, booking_client, recorder
):
    result = execute_prebooking.apply(args=(due.id, "qstash"), kwargs={"message_id": "m-1"})
    summary = result.get()
    assert summary["won"] is True and summary["outcome"] == str(BookingOutcome.BOOKED)
    assert summary["path"] == "qstash" and summary["fired_at"] == NOW
    assert booking_client.bookings["1001"] == 1
    assert recorder.names == ["task_prerun", "task_success", "task_postrun"]
    assert recorder.of("task_prerun")[0]["args"] == (due.id, "qstash")
    assert recorder.of("task_success")[0]["result"]["prebooking_id"] == due.id
    stored = AsyncResult(result.id)
    assert stored.state == states.SUCCESS and stored.result["prebooking_id"] == due.id
    assert stored.result["fired_at"] == NOW  # datetimes survive the store (Celery-JSON)
    with app.extensions["db"].session() as session:
        assert session.get(Prebooking, due.id).status == "completed"


def test_the_second_path_loses_the_claim_and_the_signals_say_so(app, due, booking_client, recorder):
    execute_prebooking.apply(args=(due.id, "qstash"))
    second = execute_prebooking.apply(args=(due.id, "cron")).get()
    assert second["won"] is False and second["action"] == "lost_claim"
    assert booking_client.bookings["1001"] == 1
    paths = [kw["args"][1] for kw in recorder.of("task_prerun")]
    assert paths == ["qstash", "cron"]
