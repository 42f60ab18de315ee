"""One run per task attempt: duplicate deliveries racing, crashed runs, deduplication ids."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from flask_app.shim import AsyncResult, shared_task, states
from flask_app.shim.models import TaskResult
from tests.shim.helpers import deliver

RUNS: list[str] = []
STARTED = threading.Event()
RELEASE = threading.Event()
_lock = threading.Lock()


@shared_task(name="once.slow", bind=True)
def slow(self):
    with _lock:
        RUNS.append(self.request.id)
    STARTED.set()
    assert RELEASE.wait(30), "the test never released the run"
    return len(RUNS)


@shared_task(name="once.quick", ignore_result=True)
def quick():
    with _lock:
        RUNS.append("quick")


@shared_task(name="once.retrying", bind=True, max_retries=1, default_retry_delay=0)
def retrying(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "second"


@pytest.fixture(autouse=True)
def _reset():
    RUNS.clear()
    STARTED.clear()
    RELEASE.clear()
    yield
    RELEASE.set()


DUPLICATES = 8


def test_simultaneous_duplicate_deliveries_run_the_body_once(app, client, gateway):
    result = slow.delay()
    [(message_id, msg)] = gateway.take()
    barrier = threading.Barrier(DUPLICATES)
    answers, done = [], threading.Semaphore(0)

    def post():
        barrier.wait()
        answers.append(deliver(client, message_id, msg))
        done.release()

    threads = [threading.Thread(target=post) for _ in range(DUPLICATES)]
    for thread in threads:
        thread.start()
    assert STARTED.wait(30)
    for _ in range(DUPLICATES - 1):  # every other delivery answers while the body still runs
        assert done.acquire(timeout=30)
    assert len(RUNS) == 1 and all(a.status_code == 200 for a in answers)
    assert all(a.json.get("running") for a in answers)
    RELEASE.set()
    for thread in threads:
        thread.join(30)
    assert result.get(timeout=5) == 1 and RUNS == [result.id]
    assert sum(1 for a in answers if a.json.get("state") == states.SUCCESS) == 1


def test_a_delivery_after_the_run_finished_is_a_duplicate(app, client, gateway):
    quick.delay()
    [(message_id, msg)] = gateway.take()
    first, again = deliver(client, message_id, msg), deliver(client, message_id, msg)
    assert first.status_code == again.status_code == 200
    assert again.json["duplicate"] and RUNS == ["quick"]  # ignored results still run once


def _lease(app, task_id, *, expires_at):
    with app.extensions["db"].session() as session:
        session.execute(
            update(TaskResult)
            .where(TaskResult.task_id == task_id)
            .values(lease_owner="crashed-worker", lease_expires_at=expires_at, lease_attempt=0)
        )
        session.commit()


def test_a_live_lease_keeps_a_second_delivery_out(app, client, gateway):
    result = quick.delay()
    [(message_id, msg)] = gateway.take()
    _lease(app, result.id, expires_at=datetime.now(UTC) + timedelta(minutes=5))
    answer = deliver(client, message_id, msg)
    assert answer.status_code == 200 and answer.json["running"] and RUNS == []


def test_a_delivery_after_a_crashed_runs_lease_lapsed_takes_the_run_over(app, client, gateway):
    result = slow.delay()
    [(message_id, msg)] = gateway.take()
    _lease(app, result.id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    RELEASE.set()
    answer = deliver(client, message_id, msg)
    assert answer.json["state"] == states.SUCCESS and RUNS == [result.id]


def test_every_message_carries_the_task_id_and_retry_count_as_deduplication_id(
    app, client, gateway
):
    result = retrying.delay()
    [(message_id, msg)] = gateway.take()
    assert msg.deduplication_id == f"{result.id}-0"
    deliver(client, message_id, msg)
    [(retry_id, retry)] = gateway.take()
    assert retry.deduplication_id == f"{result.id}-1"
    deliver(client, message_id, msg)  # the first attempt again: stale, nothing runs
    assert gateway.published == []
    deliver(client, retry_id, retry)
    assert AsyncResult(result.id).get(timeout=1) == "second"


def test_a_retry_delivered_while_its_first_attempt_still_holds_the_lease_runs(app, client, gateway):
    result = retrying.delay()
    [(message_id, msg)] = gateway.take()
    deliver(client, message_id, msg)
    [(retry_id, retry)] = gateway.take()
    _lease(app, result.id, expires_at=datetime.now(UTC) + timedelta(minutes=5))  # attempt 0
    assert deliver(client, retry_id, retry).json["state"] == states.SUCCESS
