"""Filters on bulk cancel, the DLQ and the event log: unknown keys are refused, never widened."""

from __future__ import annotations

import httpx
import pytest

from qstash_dev import filters
from qstash_dev.errors import BadRequest

pytestmark = pytest.mark.timeout(30)


def _auth(srv) -> dict[str, str]:
    return {"Authorization": f"Bearer {srv.token}"}


def _dead_letter(client, srv, receiver, path: str, n: int, **publish) -> None:
    """Put `n` messages to `path` in the DLQ."""
    receiver.respond(path, (500, {}, b""))
    for _ in range(n):
        client.message.publish_json(url=receiver.url(path), body={}, retries=0, **publish)
    assert srv.wait_idle(10)


# ----- the pure filter ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "record", "matches"),
    [
        ({"label": ["b"]}, {"label": "a", "labels": ["a", "b"]}, True),
        ({"label": ["c"]}, {"label": "a", "labels": ["a", "b"]}, False),
        ({"label": ["x,b"]}, {"labels": ["b"]}, True),
        ({"label": ["x", "b"]}, {"labels": ["b"]}, True),
        ({"url": ["http://h/a?x=1,2"]}, {"url": "http://h/a?x=1,2"}, True),
        ({"callerIP": ["1.2.3.4"]}, {"callerIP": "1.2.3.4"}, True),
        ({"queueName": ["q"], "label": ["a"]}, {"queueName": "q", "labels": ["b"]}, False),
        ({"fromDate": ["10"], "toDate": ["20"]}, {"createdAt": 20}, True),
        ({"fromDate": ["10"], "toDate": ["20"]}, {"createdAt": 21}, False),
    ],
)
def test_a_filter_ands_keys_and_ors_values(params, record, matches):
    assert filters.parse(params, filters.MESSAGES).matches(record) is matches


@pytest.mark.parametrize(
    ("params", "url", "matches"),
    [
        ({"host": ["Example.com"]}, "https://example.com/a", True),
        ({"host": ["127.0.0.1"]}, "http://127.0.0.1:8123/a", True),
        ({"host": ["127.0.0.1:8123"]}, "http://127.0.0.1:8123/a", True),
        ({"host": ["127.0.0.1:9"]}, "http://127.0.0.1:8123/a", False),
        ({"host": ["h:1"]}, "http://u:p@h:1/a", True),
        ({"host": ["example.org"]}, "https://example.com/a", False),
        ({"path": ["/a"]}, "https://example.com/a?x=1", True),
        ({"path": ["/a"]}, "https://example.com/a/b", False),
        ({"path": ["/"]}, "https://example.com", True),
        ({"path": ["/b", "/a"]}, "https://example.com/a", True),
    ],
)
def test_host_and_path_match_the_destination_url(params, url, matches):
    assert filters.parse(params, filters.EVENTS).matches({"url": url}) is matches


def test_state_aliases_expand_to_logged_states():
    filt = filters.parse({"state": ["IN_PROGRESS,CANCELLED"]}, filters.EVENTS)
    assert filt.wanted["state"] == {"ACTIVE", "RETRY", "ERROR", "CANCELED"}


@pytest.mark.parametrize(
    ("params", "accepts", "named"),
    [
        ({"labeel": ["x"]}, filters.DLQ_BULK, "labeel"),
        ({"messageId": ["m"]}, filters.MESSAGES, "messageId"),
        ({"responseStatus": ["500"]}, filters.EVENTS, "responseStatus"),
        ({"label": [""]}, filters.DLQ_LIST, "label"),
        ({"responseStatus": ["five"]}, filters.DLQ_BULK, "responseStatus"),
        ({"fromDate": ["1", "2"]}, filters.EVENTS, "fromDate"),
        ({"toDate": ["1,2"]}, filters.DLQ_BULK, "toDate"),
        ({"state": ["DONE"]}, filters.EVENTS, "DONE"),
        ({"host": ["example.com"]}, filters.DLQ_BULK, "not supported"),
        ({"path": ["/a"]}, filters.DLQ_LIST, "not supported"),
    ],
)
def test_unknown_empty_or_malformed_filters_are_refused(params, accepts, named):
    with pytest.raises(BadRequest, match=named):
        filters.parse(params, accepts)


# ----- over HTTP --------------------------------------------------------------------------------


def test_a_misspelt_dlq_filter_is_a_400_and_deletes_nothing(client, srv, receiver):
    _dead_letter(client, srv, receiver, "/typo", 2, label="keep")
    res = httpx.delete(f"{srv.url}/v2/dlq", params={"labeel": "keep"}, headers=_auth(srv))
    assert res.status_code == 400
    assert "labeel" in res.json()["error"]
    assert len(client.dlq.list().messages) == 2


def test_an_unknown_cancel_filter_is_a_400_and_cancels_nothing(client, srv, receiver):
    client.message.publish_json(url=receiver.url("/later"), body={}, delay=300)
    res = httpx.delete(f"{srv.url}/v2/messages", params={"lable": "x"}, headers=_auth(srv))
    assert res.status_code == 400
    assert "lable" in res.json()["error"]
    assert srv.broker.pending_count() == 1


def test_an_unknown_filter_in_a_json_body_is_refused_too(client, srv, receiver):
    client.message.publish_json(url=receiver.url("/later"), body={}, delay=300)
    res = httpx.request("DELETE", f"{srv.url}/v2/messages", json={"queue": "q"}, headers=_auth(srv))
    assert res.status_code == 400 and "queue" in res.json()["error"]
    assert srv.broker.pending_count() == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v2/dlq"), ("POST", "/v2/dlq/retry"), ("GET", "/v2/events"), ("GET", "/v2/logs")],
)
def test_every_filtered_endpoint_refuses_unknown_keys(srv, method, path):
    res = httpx.request(method, f"{srv.url}{path}", params={"nope": "1"}, headers=_auth(srv))
    assert res.status_code == 400
    assert "'nope'" in res.json()["error"]


def test_the_dlq_is_filtered_by_any_of_a_messages_labels(client, srv, receiver):
    _dead_letter(client, srv, receiver, "/two", 1, label="first,second")
    _dead_letter(client, srv, receiver, "/other", 1, label="third")
    listed = client.dlq.list(filter={"label": "second"}).messages
    assert [m.url for m in listed] == [receiver.url("/two")]


def test_cancel_by_path_and_host_touches_only_matching_messages(client, srv, receiver):
    port = receiver.base_url.rsplit(":", 1)[1]
    for url in (receiver.url("/a"), receiver.url("/b"), f"http://localhost:{port}/a"):
        client.message.publish_json(url=url, body={}, delay=300)
    auth = _auth(srv)
    by_host = httpx.delete(f"{srv.url}/v2/messages", params={"host": "localhost"}, headers=auth)
    assert by_host.json() == {"cancelled": 1}
    by_path = httpx.delete(f"{srv.url}/v2/messages", params={"path": "/a"}, headers=auth)
    assert by_path.json() == {"cancelled": 1}
    assert srv.broker.pending_count() == 1


def test_events_are_filtered_by_host_and_path(client, srv, receiver):
    client.message.publish_json(url=receiver.url("/p1"), body={}, delay=300)
    client.message.publish_json(url=receiver.url("/p2"), body={}, delay=300)
    params = {"path": "/p2", "host": "127.0.0.1"}
    events = httpx.get(f"{srv.url}/v2/events", params=params, headers=_auth(srv)).json()
    assert {e["url"] for e in events["events"]} == {receiver.url("/p2")}


def test_the_dlq_refuses_host_and_path(srv):
    res = httpx.delete(f"{srv.url}/v2/dlq", params={"path": "/a"}, headers=_auth(srv))
    assert res.status_code == 400
    assert "'path' is not supported" in res.json()["error"]
