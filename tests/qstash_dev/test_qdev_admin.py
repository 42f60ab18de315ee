"""Signing keys, queues, URL groups and persistence across restarts."""

from __future__ import annotations

import json

import pytest
import qstash
from qstash.errors import QStashError

from qstash_dev.testing import run_server

pytestmark = pytest.mark.timeout(30)


def test_keys_are_the_dev_defaults(client, srv):
    keys = client.signing_key.get()
    assert keys.current == srv.current_signing_key == "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
    assert keys.next == srv.next_signing_key == "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"


def test_rotated_keys_sign_new_deliveries(client, srv, make_receiver):
    old = client.signing_key.get()
    new = client.signing_key.rotate()
    assert new.current == old.next and new.next not in (old.current, old.next)
    assert len(new.next) == 32 and new.next.startswith("sig_")
    rec = make_receiver(srv)
    rec.verifier = qstash.Receiver(new.current, new.next)
    client.message.publish_json(url=rec.url("/rot"), body={})
    assert rec.wait_for("/rot")[0].verified


def test_queue_api(client):
    client.queue.upsert("jobs", parallelism=2)
    got = client.queue.get("jobs")
    assert (got.name, got.parallelism, got.paused, got.lag) == ("jobs", 2, False, 0)
    client.queue.pause("jobs")
    assert client.queue.get("jobs").paused
    client.queue.resume("jobs")
    assert [q.name for q in client.queue.list()] == ["jobs"]
    client.queue.delete("jobs")
    with pytest.raises(QStashError, match="404"):
        client.queue.get("jobs")


def test_paused_queue_holds_messages_until_resumed(client, srv, receiver):
    client.queue.upsert("held", paused=True)
    client.message.enqueue_json(queue="held", url=receiver.url("/held"), body={})
    assert client.queue.get("held").lag == 1
    assert receiver.at("/held") == []
    client.queue.resume("held")
    receiver.wait_for("/held")


def test_url_group_api(client):
    client.url_group.upsert_endpoints(
        "g", [{"url": "https://a.invalid/"}, {"url": "https://b.invalid/", "name": "b"}]
    )
    client.url_group.remove_endpoints("g", [{"name": "b"}])
    assert [e.url for e in client.url_group.get("g").endpoints] == ["https://a.invalid/"]
    assert [g.name for g in client.url_group.list()] == ["g"]
    client.url_group.delete("g")
    client.url_group.delete("never-existed")
    with pytest.raises(QStashError, match="404"):
        client.url_group.get("g")


def test_restart_with_data_dir_keeps_pending_messages_and_schedules(tmp_path, make_receiver):
    with run_server(data_dir=tmp_path) as srv:
        rec = make_receiver(srv)
        client = qstash.QStash(srv.token, base_url=srv.url, retry=False)
        res = client.message.publish_json(url=rec.url("/persist"), body={"p": 1}, delay=2)
        sched_id = client.schedule.create(destination=rec.url("/s"), cron="0 0 1 1 *")
        client.url_group.upsert_endpoints("kept", [{"url": rec.url("/k")}])
        client.signing_key.rotate()
    with run_server(data_dir=tmp_path) as again:
        client = qstash.QStash(again.token, base_url=again.url, retry=False)
        rec.verifier = qstash.Receiver(again.current_signing_key, again.next_signing_key)
        assert client.message.get(res.message_id).url == rec.url("/persist")
        assert client.schedule.get(sched_id).cron == "0 0 1 1 *"
        assert client.url_group.get("kept").endpoints[0].url == rec.url("/k")
        (hit,) = rec.wait_for("/persist", timeout=10)
        assert json.loads(hit.body) == {"p": 1} and hit.verified
