"""Exactly-once runs and rate limits end to end over a real qstash_dev."""

import threading
import time

import pytest
from qstash import QStash

from flask_app.shim import AsyncResult, backend, shared_task, states
from flask_app.shim.delivery import flow_control_key

TIMEOUT = 30
RUNS: list[str] = []
RELEASE = threading.Event()


@shared_task(name="e2e.outlives", bind=True, time_limit=1)
def outlives_its_timeout(self):
    """Runs past time_limit (QStash's delivery timeout): QStash redelivers meanwhile."""
    RUNS.append(self.request.id)
    assert RELEASE.wait(TIMEOUT), "the test never released the run"
    return "done once"


@shared_task(name="e2e.once", bind=True)
def once(self, value):
    RUNS.append(self.request.id)
    return value


@shared_task(name="e2e.limited", rate_limit="1/h")
def limited(n):
    RUNS.append(f"limited-{n}")
    return n


@pytest.fixture
def app_overrides(served_by_qstash):
    return served_by_qstash


@pytest.fixture(autouse=True)
def _reset():
    RUNS.clear()
    RELEASE.clear()
    yield
    RELEASE.set()


@pytest.fixture
def sdk(qstash_server):
    return QStash(qstash_server.token, base_url=qstash_server.url)


def until(condition, what):
    """Wait for a condition the server reaches by itself (no timing is asserted)."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def test_a_task_that_outlives_its_timeout_runs_once_while_qstash_redelivers(
    live, qstash_server, sdk
):
    result = outlives_its_timeout.delay()
    until(lambda: RUNS, "the first delivery started the body")
    # QStash gives up on the first delivery after 1 s and redelivers; the redelivery is
    # answered 2xx while the first run still goes, so QStash is done with the message.
    assert qstash_server.wait_idle(timeout=TIMEOUT)
    message_id = AsyncResult(result.id)._meta().message_id
    logs = sdk.log.list(filter={"message_id": message_id}).logs
    states_seen = [str(entry.state.value) for entry in logs]
    assert "ERROR" in states_seen and "DELIVERED" in states_seen
    assert result.state != states.SUCCESS and RUNS == [result.id]
    RELEASE.set()
    assert result.get(timeout=TIMEOUT, interval=0.05) == "done once"
    assert RUNS == [result.id]
    # the first delivery's request ends by releasing its lease: let it finish with the app
    until(lambda: backend.get(live, result.id).lease_owner is None, "the run released its lease")


def test_the_same_task_id_sent_twice_runs_once(live, qstash_server):
    first = once.apply_async(("a",), task_id="same-id")
    second = once.apply_async(("a",), task_id="same-id")
    assert first.get(timeout=TIMEOUT, interval=0.05) == "a" and second.id == first.id
    assert qstash_server.wait_idle(timeout=TIMEOUT)
    assert RUNS == ["same-id"]


def test_rate_limit_is_qstash_flow_control_per_task(live, qstash_server, sdk):
    results = [limited.delay(n) for n in range(4)]
    key = flow_control_key(limited.name)

    def waiting():
        return sdk.flow_control.get(key).wait_list_size

    until(lambda: any(r.successful() for r in results) and waiting() == 3, "one ran, 3 wait")
    flow = sdk.flow_control.get(key)
    assert (flow.rate_max, flow.rate_period) == (1, 3600)
    assert sum(r.successful() for r in results) == 1 and len(RUNS) == 1

    sdk.flow_control.reset_rate(key)  # a new window: exactly one more may go
    until(lambda: waiting() == 2 and sum(r.successful() for r in results) == 2, "one more")
    assert len(RUNS) == 2
    sdk.message.cancel_all()  # the two left wait an hour for their window: not for the teardown
