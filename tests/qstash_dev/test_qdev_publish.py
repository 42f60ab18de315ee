"""Publishing through the official SDK, checked at a verifying receiver."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import pytest
import qstash
from qstash.errors import QStashError

pytestmark = pytest.mark.timeout(30)


def test_publish_json_is_delivered_signed_with_upstash_headers(client, receiver):
    url = receiver.url("/hook?x=1&y=two")
    res = client.message.publish_json(url=url, body={"a": 1}, headers={"X-Test": "v"})
    (got,) = receiver.wait_for("/hook")
    assert got.path == "/hook?x=1&y=two"
    assert json.loads(got.body) == {"a": 1}
    assert got.header("content-type") == "application/json"
    assert got.header("x-test") == "v"
    assert got.header("upstash-message-id") == res.message_id
    assert got.header("upstash-retried") == "0"
    assert got.header("user-agent") == "Upstash-QStash"
    assert got.header("upstash-caller-ip")
    assert got.verified


def test_publish_raw_body_with_method_and_content_type(client, receiver):
    client.message.publish(
        url=receiver.url("/raw"), body="plain text", content_type="text/plain", method="PUT"
    )
    (got,) = receiver.wait_for("/raw")
    assert got.method == "PUT"
    assert got.body == b"plain text"
    assert got.header("content-type") == "text/plain"


def test_message_get_shows_a_delayed_message(client, receiver):
    res = client.message.publish_json(url=receiver.url("/later"), body={}, delay=60)
    msg = client.message.get(res.message_id)
    assert msg.url == receiver.url("/later")
    assert msg.not_before >= msg.created_at + 59_000
    assert receiver.at("/later") == []


def test_delay_and_not_before_deliver_after_the_due_time(client, receiver):
    not_before = int(time.time()) + 1
    res = client.message.publish_json(url=receiver.url("/nb"), body={}, not_before=not_before)
    (got,) = receiver.wait_for("/nb")
    assert got.started >= not_before
    delayed = client.message.publish_json(url=receiver.url("/delay"), body={}, delay="1s")
    (late,) = receiver.wait_for("/delay")
    assert late.started * 1000 >= client.message.get(delayed.message_id).not_before
    assert res.message_id != delayed.message_id


def test_deduplication_id_returns_the_original_message(client, receiver):
    first = client.message.publish_json(url=receiver.url("/d"), body={}, deduplication_id="x1")
    second = client.message.publish_json(url=receiver.url("/d"), body={}, deduplication_id="x1")
    assert second.deduplicated and not first.deduplicated
    assert second.message_id == first.message_id


def test_content_based_deduplication(client, receiver):
    kw = {"url": receiver.url("/c"), "body": {"k": 1}, "content_based_deduplication": True}
    first = client.message.publish_json(**kw)
    second = client.message.publish_json(**kw)
    other = client.message.publish_json(**{**kw, "body": {"k": 2}})
    off = client.message.publish_json(url=receiver.url("/c"), body={"k": 1})
    assert second.deduplicated and second.message_id == first.message_id
    assert not other.deduplicated and not off.deduplicated
    receiver.wait_for("/c", 3)


def test_duplicate_publish_answers_202(srv, receiver):
    headers = {"Authorization": f"Bearer {srv.token}", "Upstash-Deduplication-Id": "z"}
    url = f"{srv.url}/v2/publish/{receiver.url('/z')}"
    assert httpx.post(url, headers=headers, content=b"1").status_code == 200
    assert httpx.post(url, headers=headers, content=b"1").status_code == 202


def test_batch_publishes_every_item(client, receiver):
    res = client.message.batch_json(
        [{"url": receiver.url("/b1"), "body": {"n": 1}}, {"url": receiver.url("/b2"), "body": 2}]
    )
    assert len(res) == 2
    assert json.loads(receiver.wait_for("/b1")[0].body) == {"n": 1}
    assert receiver.wait_for("/b2")[0].body == b"2"


def test_enqueue_delivers_in_order_one_at_a_time(client, receiver):
    receiver.slow("/q", 0.05)
    ids = [
        client.message.enqueue_json(queue="fifo", url=receiver.url(f"/q?n={n}"), body={"n": n})
        for n in range(5)
    ]
    got = receiver.wait_for("/q", 5)
    assert [json.loads(d.body)["n"] for d in got] == list(range(5))
    assert [d.header("upstash-message-id") for d in got] == [r.message_id for r in ids]
    for before, after in zip(got, got[1:], strict=False):
        assert after.started >= before.finished
    assert client.queue.get("fifo").parallelism == 1


def test_url_group_fans_out_to_every_endpoint(client, receiver):
    client.url_group.upsert_endpoints(
        "grp", [{"url": receiver.url("/e1"), "name": "one"}, {"url": receiver.url("/e2")}]
    )
    res = client.message.publish_json(url_group="grp", body={"fan": True})
    assert isinstance(res, list) and {r.url for r in res} == {
        receiver.url("/e1"),
        receiver.url("/e2"),
    }
    for path in ("/e1", "/e2"):
        (got,) = receiver.wait_for(path)
        assert got.header("upstash-topic-name") == "grp"
    assert [e.url for e in client.url_group.get("grp").endpoints] == [
        receiver.url("/e1"),
        receiver.url("/e2"),
    ]


def test_cancel_one_many_and_all(client, receiver):
    ids = [
        client.message.publish_json(url=receiver.url("/x"), body={}, delay=300) for _ in range(5)
    ]
    client.message.cancel(ids[0].message_id)
    with pytest.raises(QStashError):
        client.message.get(ids[0].message_id)
    assert client.message.cancel_many([ids[1].message_id, ids[2].message_id]) == 2
    assert client.message.cancel_many([]) == 0
    assert client.message.cancel_all() == 2
    with pytest.raises(QStashError):
        client.message.cancel(ids[4].message_id)
    states = {e.state.value for e in client.log.list(filter={"message_id": ids[0].message_id}).logs}
    assert {"CREATED", "CANCEL_REQUESTED", "CANCELED"} <= states


def test_bulk_cancel_accepts_query_ids(srv, client, receiver):
    ids = [
        client.message.publish_json(url=receiver.url("/y"), body={}, delay=300) for _ in range(2)
    ]
    res = httpx.delete(
        f"{srv.url}/v2/messages",
        params=[("messageIds", r.message_id) for r in ids],
        headers={"Authorization": f"Bearer {srv.token}"},
    )
    assert res.json() == {"cancelled": 2}


def test_wrong_token_is_rejected_with_401(srv, receiver):
    bad = qstash.QStash("nope", base_url=srv.url, retry=False)
    with pytest.raises(QStashError, match="401"):
        bad.message.publish_json(url=receiver.url("/nope"), body={})
    res = httpx.get(f"{srv.url}/v2/keys", params={"qstash_token": srv.token})
    assert res.status_code == 200
    assert httpx.get(f"{srv.url}/v2/keys").json()["error"]


def test_async_client_publishes(srv, receiver):
    async def go() -> str:
        client = qstash.AsyncQStash(srv.token, base_url=srv.url, retry=False)
        res = await client.message.publish_json(url=receiver.url("/async"), body={"a": 2})
        return res.message_id

    message_id = asyncio.run(go())
    (got,) = receiver.wait_for("/async")
    assert got.header("upstash-message-id") == message_id


def test_flow_control_limits_are_reported(client, receiver):
    client.message.publish_json(
        url=receiver.url("/fc"),
        body={},
        flow_control={"key": "k1", "parallelism": 1, "rate": 10, "period": "1m"},
    )
    receiver.wait_for("/fc")
    info = client.flow_control.get("k1")
    assert (info.key, info.parallelism_max, info.rate_max, info.rate_period) == ("k1", 1, 10, 60)


def test_flow_control_parallelism_one_never_overlaps(client, receiver):
    receiver.slow("/fp", 0.05)
    for n in range(4):
        client.message.publish_json(
            url=receiver.url("/fp"), body={"n": n}, flow_control={"key": "k2", "parallelism": 1}
        )
    got = sorted(receiver.wait_for("/fp", 4), key=lambda d: d.started)
    for before, after in zip(got, got[1:], strict=False):
        assert after.started >= before.finished


def test_label_and_redaction_show_in_message(client, receiver):
    res = client.message.publish_json(
        url=receiver.url("/lab"),
        body={"secret": 1},
        delay=300,
        label="l1",
        redact={"body": True},
    )
    msg = client.message.get(res.message_id)
    assert msg.label == "l1"
    assert msg.body is not None and msg.body.startswith("REDACTED:")
    (created,) = client.log.list(filter={"message_id": res.message_id}).logs
    assert b"secret" not in base64.b64decode(created.body_base64 or "")


def test_paused_flow_control_key_holds_deliveries_until_resumed(client, receiver):
    fc = {"key": "held-key", "parallelism": 2}
    client.message.publish_json(url=receiver.url("/never"), body={}, delay=300, flow_control=fc)
    client.flow_control.pause("held-key")
    client.message.publish_json(url=receiver.url("/held"), body={}, flow_control=fc)
    deadline = time.monotonic() + 5
    while client.flow_control.get("held-key").wait_list_size < 1:
        assert time.monotonic() < deadline, "message never joined the wait list"
        time.sleep(0.02)
    assert client.flow_control.get("held-key").is_paused
    assert receiver.at("/held") == []
    client.flow_control.pin("held-key", {"parallelism": 1})
    assert client.flow_control.get("held-key").is_pinned_parallelism
    client.flow_control.resume("held-key")
    receiver.wait_for("/held")


def test_a_clock_offset_moves_the_signature_times_and_nothing_else(srv, client):
    import jwt

    from tests.qstash_dev.conftest import start_receiver

    receiver, stop = start_receiver(srv)
    srv.broker.clock_offset_s = 120.0
    try:
        before = time.time()
        client.message.publish_json(url=receiver.url("/skewed"), body={"a": 1})
        (got,) = receiver.wait_for("/skewed")
    finally:
        srv.broker.clock_offset_s = 0.0
        stop()
    claims = jwt.decode(got.header("upstash-signature"), options={"verify_signature": False})
    assert claims["iat"] == claims["nbf"] >= int(before) + 120
    assert claims["exp"] == claims["iat"] + 300
    assert json.loads(got.body) == {"a": 1}  # delivered on the real clock, body untouched
    assert not got.verified  # the SDK's Receiver refuses a token from 2 minutes ahead


def test_bulk_cancel_takes_count_oldest_first(srv, client, receiver):
    ids = [
        client.message.publish_json(url=receiver.url("/c"), body={}, delay=300, label="n")
        for _ in range(3)
    ]
    auth = {"Authorization": f"Bearer {srv.token}"}
    res = httpx.delete(f"{srv.url}/v2/messages", params={"label": "n", "count": 2}, headers=auth)
    assert res.json() == {"cancelled": 2}
    assert client.message.get(ids[2].message_id).message_id == ids[2].message_id
    res = httpx.delete(f"{srv.url}/v2/messages", params={"count": 1}, headers=auth)
    assert res.json() == {"cancelled": 1}
    assert srv.broker.pending_count() == 0


@pytest.mark.parametrize("count", ["0", "501", "all"])
def test_bulk_cancel_refuses_a_bad_count(srv, client, receiver, count):
    client.message.publish_json(url=receiver.url("/c"), body={}, delay=300)
    res = httpx.delete(
        f"{srv.url}/v2/messages",
        params={"count": count},
        headers={"Authorization": f"Bearer {srv.token}"},
    )
    assert res.status_code == 400 and "count" in res.json()["error"]
    assert srv.broker.pending_count() == 1
