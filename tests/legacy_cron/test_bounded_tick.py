"""The cron tick stays inside its budget when QStash accepts connections and never answers."""

from datetime import UTC, datetime, timedelta

import pytest

from flask_app.models import Prebooking
from legacy_cron.scheduler import run_tick
from tests.factories import make_prebooking
from tests.hanging import hanging_server


@pytest.fixture
def hung():
    with hanging_server() as server:
        yield server


@pytest.fixture
def app_overrides(hung):
    return {"QSTASH_URL": hung.url, "QSTASH_ENABLED": True}


def test_the_cron_tick_tries_a_hung_qstash_once_and_stays_in_its_budget(app, session, hung):
    opening = datetime.now(UTC) + timedelta(hours=1)
    for _ in range(250):  # three relay batches of 100 if the relay went on
        make_prebooking(session, available_at=opening)
    report = run_tick(app)
    assert report.relayed == 0
    assert hung.accepted == 1
    assert report.duration_ms < app.config["CRON_TICK_BUDGET_S"] * 1000
    waiting = session.query(Prebooking).filter(Prebooking.qstash_error.is_not(None)).count()
    assert waiting == 100  # the first batch holds its error; the rest simply wait
