"""Issue 13's table, QStash alone (cron off), end to end on SQLite and PostgreSQL.

Real HTTP everywhere: the app served by werkzeug, a real qstash_dev, the AimHarder sandbox.
`QSTASH_ENABLED=true`, `LEGACY_CRON_ENABLED=false`: nothing but the QStash path and the app's
own background runner (started explicitly here, as gunicorn's post_worker_init does) books.
Every case ends completed or failed with a reason; none stays pending.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flask_app.background import get_runner
from flask_app.models import Prebooking
from qstash_dev.testing import run_server
from tests.e2e.conftest import closed_port
from tests.e2e.test_qstash_path import create, store_cookies, wait_for_status

pytestmark = pytest.mark.slow
DAY = "20261130"


class RestartableQStash:
    """A qstash_dev on a fixed port that a test can stop and start again (QStash down)."""

    def __init__(self) -> None:
        self.port = closed_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stack: ExitStack | None = None
        self.token = ""

    def start(self) -> None:
        self._stack = ExitStack()
        srv = self._stack.enter_context(run_server(port=self.port, retry_delay_scale=0.001))
        self.token, self.server = srv.token, srv

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def wait_idle(self, timeout: float = 10.0) -> bool:
        return bool(self.server.wait_idle(timeout))


@pytest.fixture
def qstash_server() -> Iterator[RestartableQStash]:
    srv = RestartableQStash()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def app_overrides() -> dict[str, Any]:
    return {
        "LEGACY_CRON_ENABLED": False,
        "QSTASH_DLQ_INTERVAL_S": 0.5,  # the runner's reconcile, often enough for a test
        "AIMHARDER_TIMEOUT_S": 2.0,
    }


@pytest.fixture
def runner(live_app: Any) -> Iterator[Any]:
    background = get_runner(live_app)
    background.start()
    yield background
    background.stop()


def test_a_window_opened_2_s_before_create_is_booked_at_once(live_app, sandbox):
    client = live_app.test_client()
    opened = datetime.now(UTC) - timedelta(seconds=2)
    sandbox.add_class("1001", DAY, opens_at=opened, capacity=5)
    store_cookies(client)
    created = create(client, opened)
    assert created["qstash_message_id"]  # published with no delay, not left to a cron
    row = wait_for_status(client, created["id"], {"completed", "failed"})
    assert (row["status"], row["executed_by"], row["result"]["outcome"]) == (
        "completed",
        "qstash",
        "booked",
    )


def test_a_window_opening_1_s_after_create_is_booked_at_the_opening(live_app, sandbox):
    client = live_app.test_client()
    opens = datetime.now(UTC) + timedelta(seconds=1)
    sandbox.add_class("1001", DAY, opens_at=opens, capacity=5)
    store_cookies(client)
    created = create(client, opens)
    row = wait_for_status(client, created["id"], {"completed", "failed"})
    assert (row["status"], row["result"]["outcome"]) == ("completed", "booked")
    [arrival] = sandbox.arrivals()
    assert arrival["at_ns"] >= int(opens.timestamp() * 1e9)  # never early


def test_qstash_down_at_create_back_3_s_later_is_published_by_the_outbox_and_booked(
    live_app, qstash_server, sandbox, runner
):
    client = live_app.test_client()
    opens = datetime.now(UTC) + timedelta(seconds=20)
    sandbox.add_class("1001", DAY, opens_at=opens, capacity=5)
    store_cookies(client)
    qstash_server.stop()
    created = create(client, opens)
    assert created["qstash_message_id"] is None  # saved and answered; the call is owed
    wait_for_status(client, created["id"], {"pending"})
    time.sleep(3)  # QStash stays down for 3 s while the runner's retries fail
    qstash_server.start()
    row = wait_for_status(client, created["id"], {"completed", "failed"}, timeout=40)
    assert (row["status"], row["executed_by"], row["result"]["outcome"]) == (
        "completed",
        "qstash",
        "booked",
    )
    assert row["qstash_message_id"]  # the outbox's retry published it within seconds


def test_aimharder_failing_until_the_dlq_is_republished_a_bounded_number_of_times_then_failed(
    live_app, qstash_server, sandbox, runner
):
    client = live_app.test_client()
    opens = datetime.now(UTC) + timedelta(seconds=1)
    sandbox.add_class("1001", DAY, opens_at=opens, capacity=5)
    sandbox.set_fault("error_500")  # every booking, for good
    store_cookies(client)
    created = create(client, opens)
    row = wait_for_status(client, created["id"], {"completed", "failed"}, timeout=60)
    assert row["status"] == "failed"
    assert row["error_message"].startswith("dead-lettered by QStash 3 times (DLQ); last: ")
    assert "500" in row["error_message"]
    assert sandbox.bookings() == []


def test_aimharder_recovering_after_the_dlq_is_booked_by_the_republished_message(
    live_app, qstash_server, sandbox, runner
):
    client = live_app.test_client()
    opens = datetime.now(UTC) + timedelta(seconds=1)
    sandbox.add_class("1001", DAY, opens_at=opens, capacity=5)
    sandbox.set_fault("error_500", count=4)  # the first delivery and QStash's 3 retries
    store_cookies(client)
    created = create(client, opens)
    row = wait_for_status(client, created["id"], {"completed", "failed"}, timeout=60)
    assert (row["status"], row["result"]["outcome"]) == ("completed", "booked")
    assert len(sandbox.bookings()) == 1
    with live_app.extensions["db"].session() as session:
        stored = session.get(Prebooking, created["id"])
        assert (stored.qstash_dlq_count, stored.qstash_generation) == (1, 1)  # one re-publish
