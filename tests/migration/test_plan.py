"""plan_backfill is pure: each row gets the create path's message, or a reason it gets none."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from flask_app.qstash.planning import PublishPolicy, deduplication_id, is_in_rollout, plan_publish
from flask_app.qstash.publish import policy_from
from migration.backfill import PendingRow, plan_backfill

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = PublishPolicy(app_base_url="https://app.example.com")
MIN_NOTICE = timedelta(seconds=60)


def row(**overrides: object) -> PendingRow:
    values: dict[str, object] = {
        "id": "pb-1",
        "user_email": "ana@example.com",
        "available_at": NOW + timedelta(hours=1),
    }
    values.update(overrides)
    return PendingRow(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "percent", "reason"),
    [
        ({"available_at": NOW - timedelta(minutes=5)}, 100, "due"),
        ({"available_at": NOW + timedelta(seconds=30)}, 100, "due"),
        ({"available_at": NOW + timedelta(days=8)}, 100, "beyond_max_delay"),
        ({}, 0, "not_in_rollout"),
        ({"qstash_message_id": "msg_1"}, 100, "already_published"),
        ({"status": "completed"}, 100, "not_pending"),
        ({"status": "loaded"}, 100, "not_pending"),
        ({"status": "cancelled", "qstash_message_id": "msg_1"}, 100, "not_pending"),
    ],
)
def test_rows_without_a_useful_message_are_skipped_with_their_reason(overrides, percent, reason):
    plan = plan_backfill([row(**overrides)], NOW, POLICY, percent, MIN_NOTICE)
    assert plan.publish == []
    assert dict(plan.skipped) == {reason: 1}


@pytest.mark.parametrize(
    "ahead",
    [timedelta(seconds=60), timedelta(minutes=5), timedelta(days=6, hours=23)],
)
def test_a_publishable_row_gets_exactly_the_create_paths_message(ahead):
    pending = row(available_at=NOW + ahead, qstash_generation=0)
    plan = plan_backfill([pending], NOW, POLICY, 100, MIN_NOTICE)
    expected = plan_publish(
        prebooking_id="pb-1",
        user_email="ana@example.com",
        available_at=NOW + ahead,
        generation=0,
        now=NOW,
        policy=POLICY,
        min_notice=MIN_NOTICE,
    )
    assert plan.publish == [("pb-1", expected)]
    assert not plan.skipped


def test_the_message_is_due_lead_seconds_before_the_window_with_the_prebooking_as_dedup_id():
    available_at = NOW + timedelta(hours=1, milliseconds=700)
    [(pid, msg)] = plan_backfill([row(available_at=available_at)], NOW, POLICY, 100).publish
    assert pid == "pb-1"
    assert msg.not_before == math.floor((available_at - POLICY.lead).timestamp())
    assert msg.deduplication_id == "pb-1"
    assert msg.url == "https://app.example.com/api/qstash/prebooking-execute"
    assert msg.body == {
        "prebookingId": "pb-1",
        "userEmail": "ana@example.com",
        "scheduledAt": available_at.isoformat(),
    }


def test_a_rolled_back_row_gets_a_fresh_dedup_id():
    [(_, msg)] = plan_backfill([row(qstash_generation=2)], NOW, POLICY, 100).publish
    assert msg.deduplication_id == deduplication_id("pb-1", 2) == "pb-1-g2"


def test_rollout_percent_keeps_the_same_users_as_the_create_path():
    rows = [row(id=f"pb-{i}", user_email=f"user{i}@example.com") for i in range(200)]
    plan = plan_backfill(rows, NOW, POLICY, 30, MIN_NOTICE)
    published = {pid for pid, _ in plan.publish}
    assert published == {r.id for r in rows if is_in_rollout(r.user_email, 30)}
    assert plan.skipped["not_in_rollout"] == 200 - len(published)
    assert 0 < len(published) < 200


def test_a_mixed_page_is_counted_by_reason_and_keeps_row_order():
    rows = [
        row(id="a"),
        row(id="b", available_at=NOW),
        row(id="c", available_at=NOW + timedelta(days=30)),
        row(id="d", qstash_message_id="msg_d"),
        row(id="e", available_at=NOW + timedelta(hours=3)),
    ]
    plan = plan_backfill(rows, NOW, POLICY, 100, MIN_NOTICE)
    assert [pid for pid, _ in plan.publish] == ["a", "e"]
    assert dict(plan.skipped) == {"due": 1, "beyond_max_delay": 1, "already_published": 1}


def test_backfill_uses_the_create_paths_policy():
    from flask_app.config import defaults

    config = {
        "APP_BASE_URL": "https://x.example",
        "QSTASH_LEAD_SECONDS": 5,
        "QSTASH_MAX_DELAY": defaults()["QSTASH_MAX_DELAY"],
        "QSTASH_CROWD_LEAD_MS": 4,
        "QSTASH_MAX_LEAD_SECONDS": 40,
    }
    assert policy_from(config) == PublishPolicy(
        app_base_url="https://x.example",
        lead=timedelta(seconds=5),
        max_delay=timedelta(days=7),
        crowd_lead=timedelta(milliseconds=4),
        max_lead=timedelta(seconds=40),
    )


def test_a_crowd_opening_together_is_spread_later_twins_due_first_up_to_max_lead():
    at = NOW + timedelta(hours=1)  # a whole second: not_before is floored to seconds
    policy = PublishPolicy(
        app_base_url="https://app.example.com",
        crowd_lead=timedelta(milliseconds=10),
        max_lead=timedelta(seconds=60),
    )
    ranks = (0, 1, 100, 5_700, 10_000)
    rows = [row(id=f"pb-{r}", available_at=at, crowd_rank=r) for r in ranks]
    msgs = dict(plan_backfill(rows, NOW, policy, 100).publish)
    lead_s = {r: at.timestamp() - msgs[f"pb-{r}"].not_before for r in ranks}
    # 3 s for the first created; 10 ms more per earlier twin; never more than 60 s in all.
    assert lead_s == {0: 3, 1: 4, 100: 4, 5_700: 60, 10_000: 60}
    # The delivery waits inside the request for longer: its timeout grows by the spread.
    assert {r: msgs[f"pb-{r}"].timeout_s for r in ranks} == {
        0: 30,
        1: 31,
        100: 31,
        5_700: 87,
        10_000: 87,
    }


def test_a_crowd_near_the_max_delay_is_published_as_one_and_never_beyond_it():
    policy = PublishPolicy(app_base_url="https://app.example.com", max_delay=timedelta(days=7))
    edge = NOW + timedelta(days=7, seconds=3)  # the first twin's message is due in exactly 7 d
    rows = [row(id=f"pb-{r}", available_at=edge, crowd_rank=r) for r in (0, 3_000)]
    assert [pid for pid, _ in plan_backfill(rows, NOW, policy, 100).publish] == ["pb-0", "pb-3000"]
    later = [row(id="x", available_at=edge + timedelta(seconds=1), crowd_rank=3_000)]
    assert dict(plan_backfill(later, NOW, policy, 100).skipped) == {"beyond_max_delay": 1}
