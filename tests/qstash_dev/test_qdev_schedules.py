"""Schedules: create, list, get, fire, pause/resume, delete."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from qstash.errors import QStashError

pytestmark = pytest.mark.timeout(30)


def test_schedule_is_created_listed_and_fires(client, srv, receiver):
    sched_id = client.schedule.create_json(
        destination=receiver.url("/cron?src=s"), cron="* * * * *", body={"tick": 1}, retries=2
    )
    got = client.schedule.get(sched_id)
    assert (got.cron, got.destination, got.retries) == ("* * * * *", receiver.url("/cron?src=s"), 2)
    assert got.next_schedule_time is not None and not got.paused
    assert [s.schedule_id for s in client.schedule.list()] == [sched_id]
    (message_id,) = srv.trigger_schedule(sched_id)
    receiver.wait_for("/cron")
    # A real minute tick may add a delivery; pick the triggered one.
    (hit,) = [d for d in receiver.at("/cron") if d.header("upstash-message-id") == message_id]
    assert hit.header("upstash-schedule-id") == sched_id
    assert json.loads(hit.body) == {"tick": 1}
    assert srv.wait_idle(10)
    states = client.schedule.get(sched_id).last_schedule_states
    assert states and {s.value for s in states.values()} <= {"SUCCESS", "IN_PROGRESS"}


def test_seconds_cron_fires_by_itself(client, receiver):
    client.schedule.create(destination=receiver.url("/sec"), cron="* * * * * *", body="s")
    assert len(receiver.wait_for("/sec", 2, timeout=5)) >= 2


def test_schedule_with_custom_id_is_overwritten_and_cron_tz_is_accepted(client):
    first = client.schedule.create(
        destination="https://example.invalid/a", cron="0 9 * * *", schedule_id="daily"
    )
    second = client.schedule.create(
        destination="https://example.invalid/b",
        cron="CRON_TZ=Europe/Madrid 0 9 * * *",
        schedule_id="daily",
    )
    assert first == second == "daily"
    got = client.schedule.get("daily")
    assert got.destination == "https://example.invalid/b"
    assert got.cron.startswith("CRON_TZ=Europe/Madrid")
    assert len(client.schedule.list()) == 1


def test_invalid_cron_is_rejected(client):
    with pytest.raises(QStashError, match="400"):
        client.schedule.create(destination="https://example.invalid/", cron="not a cron")


def test_paused_schedule_does_not_fire_until_resumed(client, srv, receiver):
    sched_id = client.schedule.create(
        destination=receiver.url("/paused"), cron="* * * * * *", body="p"
    )
    client.schedule.pause(sched_id)
    assert client.schedule.get(sched_id).paused
    time.sleep(1.1)  # a tick produced just before the pause may still be delivered
    before = len(receiver.at("/paused"))
    time.sleep(1.2)
    assert len(receiver.at("/paused")) == before
    auth = {"Authorization": f"Bearer {srv.token}"}
    assert httpx.post(f"{srv.url}/v2/schedules/{sched_id}/resume", headers=auth).status_code == 200
    assert not client.schedule.get(sched_id).paused
    receiver.wait_for("/paused", before + 1, timeout=5)
    client.schedule.resume(sched_id)  # PATCH, idempotent


def test_deleted_schedule_is_gone(client):
    sched_id = client.schedule.create(destination="https://example.invalid/", cron="* * * * *")
    client.schedule.delete(sched_id)
    with pytest.raises(QStashError, match="404"):
        client.schedule.get(sched_id)
    assert client.schedule.list() == []


def test_schedule_into_a_queue(client, srv, receiver):
    sched_id = client.schedule.create(
        destination=receiver.url("/sq"), cron="* * * * *", body="q", queue="squeue"
    )
    srv.trigger_schedule(sched_id)
    (hit,) = receiver.wait_for("/sq")
    assert hit.header("upstash-schedule-id") == sched_id
    assert client.queue.get("squeue").name == "squeue"
