"""Both paths reach the execution core directly and are observed through one signal."""

from datetime import UTC, datetime, timedelta

import pytest

from flask_app.core import events
from flask_app.shim import signals
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


def test_webhook_and_cron_tick_each_announce_one_attempt_and_no_shim_task(
    client, session, booking_client
):
    via_qstash = make_prebooking(session, qstash_message_id="msg_1")
    via_cron = make_prebooking(session, booking_data=via_qstash.booking_data | {"class_id": "2"})
    seen, tasks = [], []

    def finished(sender, attempt, **_):
        seen.append((attempt.prebooking_id, sender, attempt.won))

    def task_ran(sender=None, **_):
        tasks.append(sender)

    with (
        events.attempt_finished.connected_to(finished),
        signals.task_prerun.connected_to(task_ran),
    ):
        assert deliver(client, body_for(via_qstash)).status_code == 200
        assert client.post(TICK, headers=CRON).json["booked"] == 1
    assert seen == [(via_qstash.id, "qstash", True), (via_cron.id, "cron", True)]
    assert tasks == []  # the booking never passes through the shim
    assert len(booking_client.calls) == 2


def test_cron_tick_relays_prebookings_that_came_within_qstash_reach(client, session, gateway):
    later = make_prebooking(session, available_at=datetime.now(UTC) + timedelta(days=2))
    response = client.post(TICK, headers=CRON)
    assert response.json["relayed"] == 1
    session.refresh(later)
    assert later.qstash_message_id is not None
    assert gateway.published[0].body["prebookingId"] == later.id
