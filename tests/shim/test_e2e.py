"""End to end over a real qstash_dev: the app serves HTTP, QStash delivers, results are polled.

The example module examples/celery_app/shim_tasks.py (a Celery module ported by changing its
imports) is loaded through TASK_IMPORTS and driven exactly as Celery code would drive it.
"""

import difflib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from qstash import QStash

from flask_app.shim import AsyncResult, states

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app_overrides(served_by_qstash):
    return served_by_qstash | {"TASK_IMPORTS": "examples.celery_app.shim_tasks"}


@pytest.fixture
def tasks(live):
    from examples.celery_app import shim_tasks

    shim_tasks.ATTEMPTS.clear()
    shim_tasks.SUCCEEDED.clear()
    return shim_tasks


def test_the_example_module_differs_from_its_celery_original_only_in_imports():
    original = (ROOT / "examples/celery_app/tasks.py").read_text().splitlines()
    ported = (ROOT / "examples/celery_app/shim_tasks.py").read_text().splitlines()
    changed = [
        line[1:]
        for line in difflib.unified_diff(original, ported, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed and all(
        line.startswith(("from celery", "from flask_app.shim")) for line in changed
    )


def test_task_imports_registers_the_example_tasks(live, tasks):
    assert tasks.add_together.name in live.extensions["celery"].tasks


def test_delay_is_delivered_by_qstash_and_get_returns_the_value(tasks):
    result = tasks.add_together.delay(23, 42)
    assert result.get(timeout=10, interval=0.05) == 65
    assert result.successful() and tasks.SUCCEEDED == [tasks.add_together.name]


def test_retries_keep_the_task_id_and_count_over_qstash(tasks):
    result = tasks.flaky_fetch.delay("k1", 2)
    value = result.get(timeout=10, interval=0.05)
    assert value == {"key": "k1", "retries": 2, "task_id": result.id}
    assert tasks.ATTEMPTS["k1"] == 3 and result.retries == 2


def test_failures_come_back_with_their_type_and_qstash_does_not_redeliver(tasks, qstash_server):
    result = tasks.always_broken.delay()
    with pytest.raises(KeyError, match="missing"):
        result.get(timeout=15, interval=0.05)
    assert qstash_server.wait_idle(timeout=5)
    assert QStash(qstash_server.token, base_url=qstash_server.url).dlq.list().messages == []


def test_celery_json_types_round_trip_over_the_wire(tasks):
    issued = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
    result = tasks.invoice.delay([["9.99", 2], ["0.02", 1]], issued)
    assert result.get(timeout=10, interval=0.05) == {
        "total": Decimal("20.00"),
        "due_at": issued + timedelta(days=30),
    }


def test_progress_states_then_success(tasks):
    result = tasks.process.delay(3)
    assert result.get(timeout=10, interval=0.05)["status"] == "done"


def test_ignore_stores_nothing(tasks, qstash_server):
    result = tasks.skip_me.delay()
    assert qstash_server.wait_idle(timeout=10)
    assert AsyncResult(result.id).state == states.PENDING


def test_revoked_before_delivery_never_runs(tasks, qstash_server):
    result = tasks.add_together.apply_async((1, 2), countdown=30)
    result.revoke()
    assert result.state == states.REVOKED
    assert qstash_server.wait_idle(timeout=5)  # the message was cancelled
    assert AsyncResult(result.id).state == states.REVOKED


@pytest.fixture
def beat(live, tasks):
    conf = live.extensions["celery"].conf
    saved = conf.beat_schedule
    conf.beat_schedule = dict(tasks.beat_schedule)
    yield conf.beat_schedule
    conf.beat_schedule = saved


def _listed(srv):
    schedules = QStash(srv.token, base_url=srv.url).schedule.list()
    return {s.schedule_id: (s.cron, s.destination) for s in schedules}


def test_sync_schedules_creates_updates_deletes_idempotently(live, beat, qstash_server):
    runner = live.test_cli_runner()
    first = runner.invoke(args=["tasks", "sync-schedules"])
    assert first.exit_code == 0, first.output
    assert "created=3 updated=0 deleted=0 unchanged=0" in first.output
    listed = _listed(qstash_server)
    assert listed["shim-add-every-5-minutes"][0] == "*/5 * * * *"
    assert listed["shim-weekday-report"][0] == "0 7 * * mon-fri"
    assert listed["shim-every-hour"][1].endswith(
        "/api/qstash/tasks/examples.celery_app.shim_tasks.add_together"
    )

    again = runner.invoke(args=["tasks", "sync-schedules"])
    assert "created=0 updated=0 deleted=0 unchanged=3" in again.output
    assert _listed(qstash_server) == listed

    del beat["every-hour"]
    beat["add-every-5-minutes"] = dict(beat["add-every-5-minutes"], args=(2, 2))
    changed = runner.invoke(args=["tasks", "sync-schedules"])
    assert "created=0 updated=1 deleted=1 unchanged=1" in changed.output
    assert set(_listed(qstash_server)) == {"shim-add-every-5-minutes", "shim-weekday-report"}


def test_a_fired_schedule_runs_its_task(live, beat, qstash_server):
    runner = live.test_cli_runner()
    assert runner.invoke(args=["tasks", "sync-schedules"]).exit_code == 0
    [message_id] = qstash_server.trigger_schedule("shim-add-every-5-minutes")
    assert AsyncResult(message_id).get(timeout=10, interval=0.05) == 32


def test_sync_refuses_what_qstash_cannot_express(live, beat):
    from flask_app.shim.schedules import crontab

    beat["bad"] = {"task": "x", "schedule": crontab(0, 7, day_of_week="mon", day_of_month="1")}
    result = live.test_cli_runner().invoke(args=["tasks", "sync-schedules"])
    assert result.exit_code != 0 and "day_of_week and day_of_month" in result.output
