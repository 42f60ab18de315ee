"""Retries, the DLQ, non-retryable errors, callbacks and the event log."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from qstash.log import LogState

pytestmark = pytest.mark.timeout(30)


def _wait_dlq(client, srv, count: int = 1):
    assert srv.wait_idle(10)
    messages = client.dlq.list().messages
    assert len(messages) == count
    return messages


def test_failing_destination_is_retried_then_dead_lettered(client, srv, receiver):
    receiver.respond("/fail", (500, {"X-Why": "broken"}, b"nope"))
    res = client.message.publish_json(url=receiver.url("/fail"), body={"a": 1}, retries=2)
    got = receiver.wait_for("/fail", 3)
    assert [d.header("upstash-retried") for d in got] == ["0", "1", "2"]
    (dead,) = _wait_dlq(client, srv)
    assert dead.message_id == res.message_id
    assert dead.response_status == 500
    assert dead.response_body == "nope"
    assert dead.response_headers["X-Why"] == ["broken"]
    assert len(receiver.at("/fail")) == 3


def test_success_after_a_retry_is_delivered_once(client, srv, receiver):
    receiver.respond("/flaky", (503, {}, b""), (200, {}, b"ok"))
    res = client.message.publish_json(url=receiver.url("/flaky"), body={}, retries=3)
    receiver.wait_for("/flaky", 2)
    assert srv.wait_idle(10)
    states = [e.state.value for e in client.log.list(filter={"message_id": res.message_id}).logs]
    assert states.count("DELIVERED") == 1
    assert {"CREATED", "ACTIVE", "ERROR", "RETRY", "DELIVERED"} <= set(states)
    assert client.dlq.list().messages == []


def test_retry_delay_expression_and_retry_after_are_accepted(client, srv, receiver):
    receiver.respond("/expr", (500, {"Retry-After": "1"}, b""), (500, {}, b""), (200, {}, b""))
    client.message.publish_json(
        url=receiver.url("/expr"), body={}, retries=3, retry_delay="pow(2, retried) * 1000"
    )
    assert len(receiver.wait_for("/expr", 3)) == 3


def test_invalid_retry_delay_expression_is_a_400(srv, receiver):
    res = httpx.post(
        f"{srv.url}/v2/publish/{receiver.url('/bad')}",
        headers={"Authorization": f"Bearer {srv.token}", "Upstash-Retry-Delay": "__import__('os')"},
    )
    assert res.status_code == 400 and "error" in res.json()


def test_489_non_retryable_goes_straight_to_the_dlq(client, srv, receiver):
    receiver.respond("/stop", (489, {"Upstash-NonRetryable-Error": "true"}, b"give up"))
    client.message.publish_json(url=receiver.url("/stop"), body={}, retries=5)
    receiver.wait_for("/stop")
    (dead,) = _wait_dlq(client, srv)
    assert dead.response_status == 489
    assert len(receiver.at("/stop")) == 1


def test_callback_receives_the_response(client, srv, receiver):
    receiver.respond("/ok", (200, {}, b"done"))
    res = client.message.publish_json(
        url=receiver.url("/ok"), body={"x": 1}, callback=receiver.url("/cb")
    )
    (cb,) = receiver.wait_for("/cb")
    payload = json.loads(cb.body)
    assert payload["status"] == 200
    assert payload["sourceMessageId"] == res.message_id
    assert base64.b64decode(payload["body"]) == b"done"
    assert base64.b64decode(payload["sourceBody"]) == b'{"x": 1}'
    assert cb.verified


def test_failure_callback_fires_once_retries_are_exhausted(client, srv, receiver):
    receiver.respond("/down", (500, {}, b"err"))
    res = client.message.publish_json(
        url=receiver.url("/down"),
        body={},
        retries=1,
        failure_callback=receiver.url("/fcb"),
        failure_callback_headers={"Forward-X-Extra": "1"},
    )
    (fcb,) = receiver.wait_for("/fcb")
    payload = json.loads(fcb.body)
    assert payload["sourceMessageId"] == res.message_id
    assert payload["status"] == 500
    assert payload["dlqId"] == client.dlq.list().messages[0].dlq_id
    assert fcb.header("x-extra") == "1"


def test_dlq_get_delete_and_bulk_delete(client, srv, receiver):
    receiver.respond("/dead", (404, {}, b"404 Not Found"))
    for _ in range(3):
        client.message.publish_json(url=receiver.url("/dead"), body={}, retries=0)
    dead = _wait_dlq(client, srv, 3)
    one = client.dlq.get(dead[0].dlq_id)
    assert one.response_body == "404 Not Found" and one.url == receiver.url("/dead")
    client.dlq.delete(dead[0].dlq_id)
    assert client.dlq.delete_many([d.dlq_id for d in dead[1:]]) == 2
    assert client.dlq.list().messages == []


def test_dlq_list_pages_with_a_cursor(client, srv, receiver):
    receiver.respond("/page", (500, {}, b""))
    for _ in range(3):
        client.message.publish_json(url=receiver.url("/page"), body={}, retries=0)
    assert srv.wait_idle(10)
    first = client.dlq.list(count=2)
    assert len(first.messages) == 2 and first.cursor
    second = client.dlq.list(cursor=first.cursor, count=2)
    assert len(second.messages) == 1 and second.cursor is None


def test_dlq_retry_republishes_via_http(client, srv, receiver):
    receiver.respond("/again", (500, {}, b""), (500, {}, b""), (200, {}, b""))
    for _ in range(2):
        client.message.publish_json(url=receiver.url("/again"), body={}, retries=0)
    dead = _wait_dlq(client, srv, 2)
    auth = {"Authorization": f"Bearer {srv.token}"}
    one = httpx.post(f"{srv.url}/v2/dlq/retry/{dead[0].dlq_id}", headers=auth)
    assert one.status_code == 201 and one.json()["messageId"].startswith("msg_")
    receiver.wait_for("/again", 3)
    assert srv.wait_idle(10)
    many = httpx.post(
        f"{srv.url}/v2/dlq/retry", params={"dlqIds": dead[1].dlq_id}, headers=auth
    ).json()
    assert len(many["responses"]) == 1
    receiver.wait_for("/again", 4)
    assert srv.wait_idle(10)
    assert client.dlq.list().messages == []


def test_events_are_listed_and_filtered(client, srv, receiver):
    res = client.message.publish_json(url=receiver.url("/ev"), body={})
    receiver.wait_for("/ev")
    assert srv.wait_idle(10)
    logs = client.log.list(filter={"message_id": res.message_id}).logs
    assert [e.state.value for e in logs] == ["DELIVERED", "ACTIVE", "CREATED"]
    delivered = client.log.list(filter={"state": LogState.DELIVERED}).logs
    assert [e.message_id for e in delivered] == [res.message_id]
    raw = httpx.get(f"{srv.url}/v2/logs", headers={"Authorization": f"Bearer {srv.token}"})
    assert len(raw.json()["logs"]) == 3


def test_timeout_counts_as_a_failed_attempt(client, srv, receiver):
    receiver.slow("/sleepy", 1.5)
    client.message.publish_json(url=receiver.url("/sleepy"), body={}, retries=0, timeout=1)
    (dead,) = _wait_dlq(client, srv)
    assert dead.url == receiver.url("/sleepy")
    errors = client.log.list(filter={"message_id": dead.message_id}).logs
    assert any(e.error == "timeout" for e in errors)


def test_a_slow_destination_does_not_hold_back_others(client, receiver):
    receiver.slow("/slowpoke", 1.0)
    client.message.publish_json(url=receiver.url("/slowpoke"), body={})
    client.message.publish_json(url=receiver.url("/quick"), body={})
    (quick,) = receiver.wait_for("/quick")
    (slow,) = receiver.wait_for("/slowpoke")
    assert quick.finished < slow.finished


def test_dlq_bulk_delete_takes_count_pages_and_returns_a_cursor(client, srv, receiver):
    receiver.respond("/bulk", (500, {}, b""))
    for _ in range(3):
        client.message.publish_json(url=receiver.url("/bulk"), body={}, retries=0)
    dead = _wait_dlq(client, srv, 3)
    auth = {"Authorization": f"Bearer {srv.token}"}
    first = httpx.delete(f"{srv.url}/v2/dlq", params={"count": 2}, headers=auth).json()
    assert first == {"deleted": 2, "cursor": dead[1].dlq_id}
    rest = httpx.delete(
        f"{srv.url}/v2/dlq", params={"count": 2, "cursor": first["cursor"]}, headers=auth
    ).json()
    assert rest == {"deleted": 1}
    assert client.dlq.list().messages == []


def test_dlq_bulk_retry_takes_count_of_a_filter_and_returns_a_cursor(client, srv, receiver):
    receiver.respond("/r", (500, {}, b""), (500, {}, b""), (500, {}, b""), (200, {}, b""))
    receiver.respond("/other", (500, {}, b""))
    for _ in range(3):
        client.message.publish_json(url=receiver.url("/r"), body={}, retries=0, label="a")
    client.message.publish_json(url=receiver.url("/other"), body={}, retries=0, label="b")
    _wait_dlq(client, srv, 4)
    auth = {"Authorization": f"Bearer {srv.token}"}
    first = httpx.post(
        f"{srv.url}/v2/dlq/retry", params={"label": "a", "count": 2}, headers=auth
    ).json()
    assert len(first["responses"]) == 2 and first["cursor"]
    rest = httpx.post(
        f"{srv.url}/v2/dlq/retry", params={"label": "a", "cursor": first["cursor"]}, headers=auth
    ).json()
    assert len(rest["responses"]) == 1 and "cursor" not in rest
    receiver.wait_for("/r", 6)
    assert [m.url for m in _wait_dlq(client, srv, 1)] == [receiver.url("/other")]


def test_dlq_bulk_by_ids_ignores_paging(client, srv, receiver):
    receiver.respond("/ids", (500, {}, b""))
    for _ in range(2):
        client.message.publish_json(url=receiver.url("/ids"), body={}, retries=0)
    dead = _wait_dlq(client, srv, 2)
    res = httpx.delete(
        f"{srv.url}/v2/dlq",
        params=[("dlqIds", d.dlq_id) for d in dead] + [("count", "1")],
        headers={"Authorization": f"Bearer {srv.token}"},
    )
    assert res.json() == {"deleted": 2}


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("DELETE", "/v2/dlq", {"count": "0"}),
        ("DELETE", "/v2/dlq", {"count": "101"}),
        ("POST", "/v2/dlq/retry", {"count": "ten"}),
        ("DELETE", "/v2/dlq", {"cursor": "not-a-cursor"}),
        ("GET", "/v2/dlq", {"cursor": "nope"}),
        ("GET", "/v2/events", {"cursor": "nope"}),
        ("GET", "/v2/events", {"count": "-1"}),
    ],
)
def test_bad_counts_and_cursors_are_a_400(srv, method, path, params):
    res = httpx.request(
        method, f"{srv.url}{path}", params=params, headers={"Authorization": f"Bearer {srv.token}"}
    )
    assert res.status_code == 400
    assert next(iter(params)) in res.json()["error"]
