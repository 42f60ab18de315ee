"""Live mode with a recording Gateway: messages, the task endpoint, states, signal order."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from flask_app import close, create_app
from flask_app.shim import AsyncResult, shared_task, states
from flask_app.shim.exceptions import (
    NotRegistered,
    OperationalError,
    TaskRevokedError,
    TimeoutError,
    UnsupportedOption,
)
from tests.shim.helpers import deliver, sign

RUNS: list[str] = []


@shared_task(name="live.add")
def add(x, y):
    RUNS.append("add")
    return x + y


@shared_task(name="live.boom")
def boom():
    raise ValueError("nope")


@shared_task(name="live.flaky", bind=True, max_retries=2, default_retry_delay=30)
def flaky(self, fail_times):
    if self.request.retries < fail_times:
        raise self.retry(exc=ConnectionError("down"))
    return {"retries": self.request.retries, "id": self.request.id}


@shared_task(name="live.ignored", ignore_result=True)
def quiet():
    return "x"


@shared_task(name="live.progress", bind=True)
def progress(self):
    self.update_state(state="PROGRESS", meta={"done": 1})
    return "done"


@pytest.fixture(autouse=True)
def _clear():
    RUNS.clear()


def run_all(client, gateway, retried=0):
    """Deliver every published message (and those they publish), return the responses."""
    answers = []
    while gateway.published:
        for message_id, msg in gateway.take():
            answers.append(deliver(client, message_id, msg, retried))
    return answers


def test_delay_publishes_one_message_to_the_task_endpoint(app, gateway):
    result = add.delay(2, 3)
    [(message_id, msg)] = gateway.published
    assert msg.url == "http://app.test/api/qstash/tasks/live.add"
    assert msg.body["id"] == result.id and msg.body["task"] == "live.add"
    assert (msg.body["args"], msg.body["kwargs"], msg.body["retries"]) == ([2, 3], {}, 0)
    assert result.state == states.PENDING and not result.ready()


def test_delivery_runs_the_task_and_stores_success(app, client, gateway):
    result = add.delay(2, 3)
    [answer] = run_all(client, gateway)
    assert answer.status_code == 200 and answer.json["state"] == "SUCCESS"
    assert result.get(timeout=1) == 5 and result.successful() and result.date_done


def test_live_signal_order_for_success(app, client, gateway, recorder):
    add.delay(1, 1)
    run_all(client, gateway)
    assert recorder.names == [
        "before_task_publish",
        "after_task_publish",
        "task_received",
        "task_prerun",
        "task_success",
        "task_postrun",
    ]
    publish = recorder.events[0]
    assert publish[1] == "live.add" and publish[2]["headers"]["task"] == "live.add"
    assert publish[2]["body"][0] == [1, 1]
    assert recorder.of("task_received")[0]["request"].name == "live.add"
    assert recorder.events[3][1] is add


def test_a_failing_task_answers_200_and_stores_failure(app, client, gateway, recorder):
    result = boom.delay()
    [answer] = run_all(client, gateway)
    assert answer.status_code == 200 and answer.json["state"] == "FAILURE"
    assert recorder.names[-3:] == ["task_prerun", "task_failure", "task_postrun"]
    with pytest.raises(ValueError, match="nope"):
        result.get(timeout=1)
    assert isinstance(result.get(propagate=False), ValueError)
    assert result.failed() and "ValueError: nope" in result.traceback


def test_retry_republishes_same_id_and_counts_like_celery(app, client, gateway, recorder):
    result = flaky.delay(2)
    first = run_all(client, gateway)
    assert [a.json["state"] for a in first] == ["RETRY", "RETRY", "SUCCESS"]
    assert result.get(timeout=1) == {"retries": 2, "id": result.id}
    assert recorder.names.count("before_task_publish") == 3
    retry_publish = [kw["headers"] for kw in recorder.of("before_task_publish")]
    assert [(h["id"], h["retries"]) for h in retry_publish] == [(result.id, n) for n in range(3)]
    assert [kw["state"] for kw in recorder.of("task_postrun")] == ["RETRY", "RETRY", "SUCCESS"]
    # a retry's order: publish of the new message, then task_retry, then task_postrun
    names = recorder.names
    i = names.index("task_retry")
    assert names[i - 2 : i + 2] == [
        "before_task_publish",
        "after_task_publish",
        "task_retry",
        "task_postrun",
    ]


def test_retry_messages_carry_the_countdown(app, client, gateway):
    flaky.delay(1)
    [(mid, msg)] = gateway.take()
    before = datetime.now(UTC)
    deliver(client, mid, msg)
    [(_, again)] = gateway.published
    assert again.body["retries"] == 1 and again.body["id"] == msg.body["id"]
    assert again.not_before >= int((before + timedelta(seconds=29)).timestamp())


def test_retries_past_the_limit_fail_with_the_exc(app, client, gateway):
    result = flaky.delay(5)
    run_all(client, gateway)
    assert result.state == states.FAILURE and isinstance(result.result, ConnectionError)
    assert result.retries == 2


def test_duplicate_deliveries_of_a_finished_id_run_nothing(app, client, gateway):
    add.delay(1, 2)
    [(mid, msg)] = gateway.take()
    assert deliver(client, mid, msg).json["state"] == "SUCCESS"
    again = deliver(client, mid, msg, retried=1)
    assert again.status_code == 200 and again.json["duplicate"] is True
    assert RUNS == ["add"]


def test_a_stale_redelivery_of_an_earlier_attempt_runs_nothing(app, client, gateway):
    flaky.delay(1)
    [(mid, msg)] = gateway.take()
    deliver(client, mid, msg)  # RETRY; a new message was published
    assert deliver(client, mid, msg, retried=1).json["stale"] is True


def test_revoke_cancels_the_message_and_the_task_never_runs(app, client, gateway, recorder):
    result = add.apply_async((1, 2), countdown=60)
    [(mid, msg)] = gateway.take()
    result.revoke()
    assert gateway.cancelled == [mid]
    assert result.state == states.REVOKED
    answer = deliver(client, mid, msg)  # delivered anyway (already in flight)
    assert answer.status_code == 200 and answer.json["state"] == "REVOKED"
    assert RUNS == []
    assert "task_received" not in recorder.names and "task_prerun" not in recorder.names
    assert recorder.of("task_revoked")[0]["expired"] is False
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)


def test_app_control_revoke_takes_a_list(app, gateway):
    a, b = add.delay(1, 1), add.delay(2, 2)
    app.extensions["celery"].control.revoke([a.id, b.id])
    assert a.state == b.state == states.REVOKED and len(gateway.cancelled) == 2
    with pytest.raises(UnsupportedOption):
        a.revoke(terminate=True)


def test_expired_tasks_are_revoked_at_delivery(app, client, gateway, recorder):
    result = add.apply_async((1, 2), expires=datetime.now(UTC) - timedelta(seconds=1))
    run_all(client, gateway)
    assert result.state == states.REVOKED and RUNS == []
    [revoked] = recorder.of("task_revoked")
    assert revoked["expired"] is True and revoked["request"].id == result.id
    assert "task_prerun" not in recorder.names


def test_expires_in_seconds_is_carried_as_an_iso_time(app, gateway):
    add.apply_async((1, 2), expires=30)
    [(_, msg)] = gateway.published
    assert datetime.fromisoformat(msg.body["expires"]) > datetime.now(UTC)


def test_unknown_task_names_fire_task_unknown_and_store_not_registered(app, client, recorder):
    raw = json.dumps({"id": "u-1", "task": "no.such", "args": [], "kwargs": {}}).encode()
    url = "http://app.test/api/qstash/tasks/no.such"
    answer = client.post(
        "/api/qstash/tasks/no.such", data=raw, headers={"Upstash-Signature": sign(raw, url)}
    )
    assert answer.status_code == 489 and answer.headers["Upstash-NonRetryable-Error"] == "true"
    assert "not registered" in answer.json["error"]
    [unknown] = recorder.of("task_unknown")
    assert unknown["name"] == "no.such" and isinstance(unknown["exc"], NotRegistered)
    assert AsyncResult("u-1").state == states.FAILURE


def test_malformed_messages_fire_task_rejected(app, client, recorder):
    raw = b'{"id": "r-1", "args": "not a list"}'
    url = "http://app.test/api/qstash/tasks/live.add"
    answer = client.post(
        "/api/qstash/tasks/live.add", data=raw, headers={"Upstash-Signature": sign(raw, url)}
    )
    assert answer.status_code == 489 and "malformed" in answer.json["error"]
    assert recorder.names == ["task_rejected"]


def test_forged_or_missing_signatures_get_401_and_run_nothing(app, client, gateway):
    add.delay(1, 2)
    [(mid, msg)] = gateway.take()
    raw = json.dumps(msg.body).encode()
    forged = sign(raw, msg.url, key="sig_not_the_key_but_long_enough_for_hs256")
    assert (
        client.post(
            "/api/qstash/tasks/live.add", data=raw, headers={"Upstash-Signature": forged}
        ).status_code
        == 401
    )
    assert client.post("/api/qstash/tasks/live.add", data=raw).status_code == 401
    other_body = sign(b"{}", msg.url)
    assert (
        client.post(
            "/api/qstash/tasks/live.add", data=raw, headers={"Upstash-Signature": other_body}
        ).status_code
        == 401
    )
    assert RUNS == []


def test_results_are_readable_from_another_app_sharing_the_database(
    app, app_config, client, gateway
):
    result = add.delay(20, 22)
    run_all(client, gateway)
    other = create_app(app_config)
    try:
        with other.app_context():
            again = AsyncResult(result.id)
            assert (again.state, again.get(timeout=1), again.name) == ("SUCCESS", 42, "live.add")
            assert again.args == [20, 22]
    finally:
        close(other)


def test_get_times_out_on_a_pending_task(app):
    with pytest.raises(TimeoutError):
        AsyncResult("never-sent").get(timeout=0.05, interval=0.01)


def test_forget_deletes_the_result(app, client, gateway):
    result = add.delay(1, 2)
    run_all(client, gateway)
    result.forget()
    assert AsyncResult(result.id).state == states.PENDING


def test_ignored_results_answer_none_and_stay_pending(app, client, gateway):
    result = quiet.delay()
    run_all(client, gateway)
    assert result.get() is None and AsyncResult(result.id).state == states.PENDING


def test_update_state_stores_custom_states_with_meta(app):
    result = progress.apply(task_id="p-1")
    assert result.get() == "done"
    stored = AsyncResult("p-1")
    assert stored.state == "PROGRESS" and stored.info == {"done": 1}


@pytest.mark.parametrize(
    ("options", "field", "check"),
    [
        ({"countdown": 90}, "not_before", lambda v: v >= datetime.now(UTC).timestamp() + 89),
        ({"eta": datetime(2030, 1, 1, tzinfo=UTC)}, "not_before", lambda v: v is None),
        ({"time_limit": 30}, "timeout_s", lambda v: v == 30),
    ],
)
def test_apply_async_options_map_to_the_message(app, gateway, options, field, check):
    try:
        add.apply_async((1, 2), **options)
    except UnsupportedOption:
        assert "eta" in options  # 2030 is beyond the 7-day maximum delay
        return
    [(_, msg)] = gateway.published
    assert check(getattr(msg, field))


def test_eta_within_the_max_delay_becomes_not_before(app, gateway):
    eta = datetime.now(UTC) + timedelta(hours=1)
    add.apply_async((1, 2), eta=eta)
    [(_, msg)] = gateway.published
    assert msg.not_before == int(eta.timestamp()) + (1 if eta.microsecond else 0)
    assert msg.body["eta"] == eta.isoformat()


def test_delays_beyond_the_qstash_maximum_are_refused(app, gateway):
    with pytest.raises(UnsupportedOption, match="maximum delay"):
        add.apply_async((1, 2), countdown=8 * 24 * 3600)
    assert gateway.published == []


def test_task_id_headers_and_links_travel_in_the_message(app, client, gateway):
    result = add.apply_async(
        (1, 2), task_id="mine", headers={"tenant": "t1"}, link=add.s(10), link_error=boom.si()
    )
    [(mid, msg)] = gateway.take()
    assert result.id == "mine" and msg.body["headers"] == {"tenant": "t1"}
    assert msg.body["callbacks"][0]["task"] == "live.add"
    assert msg.body["errbacks"][0]["immutable"] is True
    deliver(client, mid, msg)
    [(_, linked)] = gateway.published
    assert linked.body["args"] == [3, 10]


@pytest.mark.parametrize(
    "option",
    [
        {"priority": 5},
        {"soft_time_limit": 3},
        {"queue": "other"},
        {"chord": object()},
        {"serializer": "pickle"},
        {"bogus": 1},
    ],
)
def test_apply_async_refuses_options_it_cannot_honour(app, gateway, option):
    with pytest.raises((UnsupportedOption, TypeError)):
        add.apply_async((1, 2), **option)
    assert gateway.published == []


def test_qstash_failures_surface_as_operational_error(app, gateway):
    from flask_app.qstash.gateway import QStashUnavailable

    def down(msg):
        raise QStashUnavailable("down")

    gateway.publish = down
    with pytest.raises(OperationalError, match="could not publish"):
        add.delay(1, 2)


def test_schedule_deliveries_use_the_message_id_as_task_id(app, client):
    raw = json.dumps({"task": "live.add", "args": [2, 2], "kwargs": {}}).encode()
    url = "http://app.test/api/qstash/tasks/live.add"
    headers = {"Upstash-Signature": sign(raw, url), "Upstash-Message-Id": "msg_sched_1"}
    assert client.post("/api/qstash/tasks/live.add", data=raw, headers=headers).json == {
        "id": "msg_sched_1",
        "state": "SUCCESS",
    }
    assert AsyncResult("msg_sched_1").get() == 4


@shared_task(name="live.requeue")
def requeue():
    from flask_app.shim.exceptions import Reject

    raise Reject("later", requeue=True)


def test_reject_with_requeue_answers_non_2xx_so_qstash_redelivers(app, client, gateway):
    requeue.delay()
    [answer] = run_all(client, gateway)
    assert answer.status_code == 409 and "requeue" in answer.json["error"]


def test_delay_on_commit_waits_for_the_session_to_commit(app, gateway):
    from sqlalchemy import text

    from flask_app.db import get_session

    with app.test_request_context():
        session = get_session()
        session.execute(text("SELECT 1"))
        add.delay_on_commit(1, 2)
        assert gateway.published == []
        session.commit()
        assert len(gateway.published) == 1


def test_retries_keep_expires_headers_and_links(app, client, gateway):
    expires = datetime.now(UTC) + timedelta(hours=1)
    flaky.apply_async((1,), expires=expires, headers={"h": 1}, link=add.s(1))
    [(mid, msg)] = gateway.take()
    deliver(client, mid, msg)
    [(_, again)] = gateway.published
    assert again.body["expires"] == msg.body["expires"] == expires.isoformat()
    assert again.body["headers"] == {"h": 1} and again.body["callbacks"] == msg.body["callbacks"]


def test_messages_larger_than_the_endpoint_accepts_are_refused_at_the_call(app, gateway):
    with pytest.raises(UnsupportedOption, match="MAX_CONTENT_LENGTH"):
        add.delay("x" * 70_000, "y")
    assert gateway.published == []


@shared_task(name="live.stamp")
def stamp(value, at):
    return {"value": value, "at": at}


def test_link_arguments_go_through_celery_json_too(app, client, gateway):
    at = datetime(2026, 11, 30, 7, tzinfo=UTC)
    add.apply_async((1, 2), link=stamp.s(at))
    [(mid, msg)] = gateway.take()
    assert msg.body["callbacks"][0]["args"] == [
        {"__type__": "datetime", "__value__": at.isoformat()}
    ]
    deliver(client, mid, msg)
    [(link_id, linked)] = gateway.take()
    deliver(client, link_id, linked)
    assert AsyncResult(linked.body["id"]).get() == {"value": 3, "at": at}


@shared_task(name="live.ignore_me")
def ignore_me():
    from flask_app.shim.exceptions import Ignore

    raise Ignore()


def test_live_ignore_stores_nothing_and_fires_postrun_without_success(
    app, client, gateway, recorder
):
    result = ignore_me.delay()
    [answer] = run_all(client, gateway)
    assert answer.status_code == 200 and answer.json["state"] == states.IGNORED
    assert recorder.names == [
        "before_task_publish",
        "after_task_publish",
        "task_received",
        "task_prerun",
        "task_postrun",
    ]
    assert AsyncResult(result.id).state == states.PENDING


def test_live_retry_signal_table(app, client, gateway, recorder):
    flaky.delay(1)
    run_all(client, gateway)
    assert recorder.names == [
        "before_task_publish",
        "after_task_publish",
        "task_received",
        "task_prerun",
        "before_task_publish",
        "after_task_publish",
        "task_retry",
        "task_postrun",
        "task_received",
        "task_prerun",
        "task_success",
        "task_postrun",
    ]
    [retry] = recorder.of("task_retry")
    assert isinstance(retry["reason"].exc, ConnectionError) and retry["request"].retries == 0


@shared_task(name="live.limited", rate_limit="10/m")
def limited():
    return "ok"


@pytest.mark.parametrize(
    ("rate", "expected"),
    [("100/s", (100, 1)), ("10/m", (10, 60)), ("1/h", (1, 3600)), ("5", (5, 1)), (3, (3, 1))],
)
def test_celery_rates_become_flow_control_rate_and_period(rate, expected):
    from flask_app.shim.conf import from_rate_limit

    assert from_rate_limit(rate, "t") == expected


def test_a_rate_limited_task_publishes_with_its_flow_control_key(app, gateway):
    limited.delay()
    add.delay(1, 2)
    [(_, msg), (_, plain)] = gateway.published
    assert msg.flow_control == {"key": "celery-rate.live.limited", "rate": 10, "period": 60}
    assert plain.flow_control is None


def test_task_default_rate_limit_applies_to_tasks_without_one(app, gateway):
    conf = app.extensions["celery"].conf
    conf.task_default_rate_limit = "2/s"
    try:
        add.delay(1, 2)
    finally:
        conf.task_default_rate_limit = None
    [(_, msg)] = gateway.published
    assert msg.flow_control == {"key": "celery-rate.live.add", "rate": 2, "period": 1}
