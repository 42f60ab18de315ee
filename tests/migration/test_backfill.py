"""Backfill end to end: the real SDK against a real qstash_dev, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from qstash.errors import QStashError as SdkError

from flask_app.db import get_db
from flask_app.models import Prebooking
from flask_app.qstash.gateway import (
    Gateway,
    Message,
    Published,
    QStashRejected,
    QStashUnavailable,
    get_gateway,
)
from flask_app.qstash.publish import policy_from
from migration.backfill import (
    PendingRow,
    Summary,
    apply_plan,
    plan_backfill,
    run_backfill,
)
from tests.factories import booking_data
from tests.migration.conftest import APP_BASE_URL, rows_by_id, seed


class Crash(BaseException):
    """Stands for the process dying (not an Exception: nothing may catch it)."""


class CrashAfter:
    """A Gateway that publishes for real, then dies right after QStash accepted batch `k`."""

    def __init__(self, real: Gateway, k: int) -> None:
        self.real, self.k, self.calls = real, k, 0

    def batch(self, msgs: Sequence[Message]) -> list[Published]:
        answers = self.real.batch(msgs)
        self.calls += 1
        if self.calls == self.k:
            raise Crash(f"died after batch {self.k}, before storing its ids")
        return answers

    def cancel_many(self, message_ids: Sequence[str]) -> int:
        return self.real.cancel_many(message_ids)


class Down:
    """A Gateway whose QStash is unreachable."""

    def __init__(self) -> None:
        self.calls = 0

    def batch(self, msgs: Sequence[Message]) -> list[Published]:
        self.calls += 1
        raise QStashUnavailable("QStash unreachable: ConnectError: connection refused")

    def cancel_many(self, message_ids: Sequence[str]) -> int:
        raise QStashUnavailable("QStash unreachable")


def backfill(app: Any, gateway: Any = None, **kwargs: Any) -> Summary:
    """Run the backfill as the command does, with an optional gateway wrapper."""
    args: dict[str, Any] = {
        "session_factory": get_db(app).sessions,
        "gateway": gateway or get_gateway(app),
        "clock": lambda: datetime.now(UTC),
        "policy": policy_from(app.config),
        "rollout_percent": 100,
        "batch_size": 5,
    } | kwargs
    return run_backfill(**args)


def test_backfill_publishes_the_create_paths_message_for_every_pending_prebooking(
    app, runner, session, sdk, qstash_server
):
    ids = seed(session, 7)
    result = runner.invoke(args=["migration", "backfill", "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert "published:    7" in result.output
    rows = rows_by_id(session)
    assert qstash_server.broker.pending_count() == 7
    for pid in ids:
        row = rows[pid]
        assert row.qstash_message_id
        msg = sdk.message.get(row.qstash_message_id)
        assert msg.url == f"{APP_BASE_URL}/api/qstash/prebooking-execute"
        assert json.loads(msg.body or "") == {
            "prebookingId": pid,
            "userEmail": row.user_email,
            "scheduledAt": row.available_at.isoformat(),
        }
        assert (
            msg.not_before
            == math.floor((row.available_at - timedelta(seconds=3)).timestamp()) * 1000
        )
        assert msg.max_retries == 3


def test_each_message_carries_the_prebooking_id_as_its_deduplication_id(app, runner, session):
    [pid] = seed(session, 1)
    runner.invoke(args=["migration", "backfill"])
    row = rows_by_id(session)[pid]
    [(_, msg)] = plan_backfill(
        [PendingRow(pid, row.user_email, row.available_at)],
        datetime.now(UTC),
        policy_from(app.config),
        100,
    ).publish
    again = get_gateway(app).publish(msg)
    assert again == Published(row.qstash_message_id or "", deduplicated=True)


def test_a_rerun_publishes_nothing_new(app, runner, session, qstash_server):
    seed(session, 6)
    first = runner.invoke(args=["migration", "backfill"])
    ids_before = {pid: r.qstash_message_id for pid, r in rows_by_id(session).items()}
    second = runner.invoke(args=["migration", "backfill"])
    assert "published:    6" in first.output
    assert "backfill: 0 pending prebookings without a QStash message" in second.output
    assert "published:    0" in second.output
    assert {pid: r.qstash_message_id for pid, r in rows_by_id(session).items()} == ids_before
    assert qstash_server.broker.pending_count() == 6


def test_due_far_future_and_out_of_rollout_prebookings_are_left_alone_and_counted(
    app, session, qstash_server
):
    seed(session, 2, ahead=timedelta(seconds=-30))
    seed(session, 1, ahead=timedelta(seconds=20))
    seed(session, 3, ahead=timedelta(days=9))
    publishable = seed(session, 4)
    summary = backfill(app)
    assert (summary.published, summary.failed) == (4, 0)
    assert dict(summary.skipped) == {"due": 3, "beyond_max_delay": 3}
    rows = rows_by_id(session)
    assert {pid for pid, r in rows.items() if r.qstash_message_id} == set(publishable)
    assert qstash_server.broker.pending_count() == 4
    assert dict(backfill(app, rollout_percent=0).skipped) == {"not_in_rollout": 6}


def test_rollout_percent_limits_the_backfill_to_the_users_in_it(app, session):
    seed(session, 40)
    summary = backfill(app, rollout_percent=25)
    published = {pid for pid, r in rows_by_id(session).items() if r.qstash_message_id}
    assert summary.published == len(published)
    assert summary.skipped["not_in_rollout"] == 40 - len(published)


def test_other_statuses_and_published_rows_are_not_touched(app, session, qstash_server):
    seed(session, 2, status="completed")
    seed(session, 1, status="cancelled")
    seed(session, 3)
    assert backfill(app).published == 3
    assert backfill(app).published == 0
    rows = rows_by_id(session).values()
    assert sorted(bool(r.qstash_message_id) for r in rows if r.status != "pending") == [False] * 3
    assert qstash_server.broker.pending_count() == 3


def test_a_prebooking_whose_session_expired_still_gets_its_message(app, session, qstash_server):
    # session_expired still waits for its window: a new PUT /api/sessions revives it.
    ids = seed(session, 2, status="session_expired")
    assert backfill(app).published == 2
    assert all(rows_by_id(session)[pid].qstash_message_id for pid in ids)


def test_a_crash_mid_backfill_then_a_rerun_leaves_exactly_one_message_per_prebooking(
    app, session, qstash_server
):
    ids = seed(session, 23)
    with pytest.raises(Crash):
        backfill(app, gateway=CrashAfter(get_gateway(app), k=3), batch_size=5)
    rows = rows_by_id(session)
    assert sum(1 for r in rows.values() if r.qstash_message_id) == 10  # batches 1-2 stored
    assert qstash_server.broker.pending_count() == 15  # batch 3 reached QStash, ids lost

    summary = backfill(app, batch_size=5)

    assert (summary.deduplicated, summary.published, summary.failed) == (5, 8, 0)
    rows = rows_by_id(session)
    message_ids = [rows[pid].qstash_message_id for pid in ids]
    assert all(message_ids) and len(set(message_ids)) == 23
    assert qstash_server.broker.pending_count() == 23  # no duplicate was created


def test_unavailable_qstash_is_recorded_counted_and_stops_after_three_failed_batches(
    app, session, qstash_server
):
    seed(session, 30)
    down = Down()
    summary = backfill(app, gateway=down, batch_size=5)
    assert down.calls == 3 and summary.aborted
    assert (summary.failed, summary.published) == (15, 0)
    rows = rows_by_id(session).values()
    assert sum(1 for r in rows if r.qstash_error and "unreachable" in r.qstash_error) == 15
    assert all(r.qstash_message_id is None for r in rows)

    assert backfill(app, batch_size=5).published == 30
    assert all(r.qstash_error is None for r in rows_by_id(session).values())
    assert qstash_server.broker.pending_count() == 30


def test_the_command_exits_non_zero_and_says_why_when_batches_fail(app, runner, session):
    seed(session, 2)
    app.extensions["qstash"] = Down()
    result = runner.invoke(args=["migration", "backfill"])
    assert result.exit_code == 1
    assert "failed:       2" in result.output
    assert "QStash unreachable" in result.output


def test_a_prebooking_cancelled_while_its_batch_is_in_flight_gets_its_message_cancelled(
    app, session, sdk
):
    ids = seed(session, 3)
    rows = [PendingRow(r.id, r.user_email, r.available_at) for r in rows_by_id(session).values()]
    plan = plan_backfill(rows, datetime.now(UTC), policy_from(app.config), 100)
    rows_by_id(session)[ids[0]].status = "cancelled"
    session.commit()
    summary = apply_plan(plan, get_gateway(app), get_db(app).sessions, batch_size=10)
    assert (summary.published, summary.raced) == (3, 1)
    stored = rows_by_id(session)
    assert stored[ids[0]].qstash_message_id is None
    assert all(stored[pid].qstash_message_id for pid in ids[1:])
    cancelled = plan.publish[[pid for pid, _ in plan.publish].index(ids[0])]
    with pytest.raises(SdkError):
        sdk.message.get(get_gateway(app).publish(cancelled[1]).message_id)


def test_dry_run_publishes_nothing_and_prints_the_plan(app, runner, session, qstash_server):
    ids = seed(session, 3)
    seed(session, 1, ahead=timedelta(days=10))
    result = runner.invoke(args=["migration", "backfill", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "dry run: would publish 3 messages (nothing was published)" in result.output
    assert "skipped:      1 (beyond_max_delay=1)" in result.output
    for pid in ids:
        assert f"dedup={pid}" in result.output
    assert qstash_server.broker.pending_count() == 0
    assert all(r.qstash_message_id is None for r in rows_by_id(session).values())


def test_the_command_refuses_to_publish_while_the_qstash_path_is_off(app, runner, session):
    seed(session, 1)
    app.config["QSTASH_ENABLED"] = False
    result = runner.invoke(args=["migration", "backfill"])
    assert result.exit_code != 0
    assert "the QStash path is off" in result.output
    assert runner.invoke(args=["migration", "backfill", "--force"]).exit_code == 0


def test_a_dry_run_says_when_the_real_run_would_refuse(app, runner, session):
    seed(session, 1)
    app.config["QSTASH_ENABLED"] = False
    result = runner.invoke(args=["migration", "backfill", "--dry-run"])
    assert result.exit_code == 0
    assert "warning: the real run would refuse: the QStash path is off" in result.stderr
    assert "dry run: would publish 1 messages" in result.stdout
    app.config["QSTASH_ENABLED"] = True
    quiet = runner.invoke(args=["migration", "backfill", "--dry-run"])
    assert "would refuse" not in quiet.output


def test_shadow_mode_alone_is_enough_to_backfill(app, runner, session):
    seed(session, 1)
    app.config.update(QSTASH_ENABLED=False, QSTASH_SHADOW=True)
    result = runner.invoke(args=["migration", "backfill"])
    assert result.exit_code == 0 and "published:    1" in result.output


def test_prebookings_whose_deliveries_died_in_the_dlq_are_left_to_cron(app, session, qstash_server):
    seed(session, 2, qstash_error="dlq: delivery failed 4 times")
    failed_before = seed(session, 1, qstash_error="publish: QStash unreachable")
    summary = backfill(app)
    assert (summary.seen, summary.published) == (1, 1)
    assert rows_by_id(session)[failed_before[0]].qstash_message_id
    assert qstash_server.broker.pending_count() == 1


class RefusesOne:
    """A Gateway whose QStash refuses any batch holding one particular message."""

    def __init__(self, real: Gateway, bad_dedup_id: str) -> None:
        self.real, self.bad = real, bad_dedup_id

    def batch(self, msgs: Sequence[Message]) -> list[Published]:
        if any(m.deduplication_id == self.bad for m in msgs):
            raise QStashRejected("QStash refused the request: status: 400, body: bad header")
        return self.real.batch(msgs)

    def cancel_many(self, message_ids: Sequence[str]) -> int:
        return self.real.cancel_many(message_ids)


def test_a_refused_batch_is_retried_message_by_message_so_only_the_bad_one_fails(
    app, session, qstash_server
):
    ids = seed(session, 6)
    summary = backfill(app, gateway=RefusesOne(get_gateway(app), ids[2]), batch_size=6)
    assert (summary.published, summary.failed, summary.aborted) == (5, 1, False)
    rows = rows_by_id(session)
    assert rows[ids[2]].qstash_message_id is None
    assert "status: 400" in (rows[ids[2]].qstash_error or "")
    assert all(rows[pid].qstash_message_id for pid in ids if pid != ids[2])
    assert qstash_server.broker.pending_count() == 5


@pytest.mark.parametrize("size", ["0", "1001", "ten"])
def test_a_batch_size_qstash_cannot_take_is_refused_with_a_clear_message(app, runner, size):
    result = runner.invoke(args=["migration", "backfill", "--batch-size", size])
    assert result.exit_code == 2
    assert "Invalid value for '--batch-size'" in result.output


def test_a_crowd_opening_together_is_spread_in_creation_order(app, session, sdk):
    app.config["QSTASH_CROWD_LEAD_MS"] = 1000  # a second per twin, to read it off not_before
    opens = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    created = datetime.now(UTC)
    rows = [
        Prebooking(
            user_email=f"user{i}@example.com",
            booking_data=booking_data(),
            available_at=opens,
            status="pending",
            created_at=created + timedelta(milliseconds=i),
            updated_at=created,
        )
        for i in (2, 0, 1)  # inserted out of creation order
    ]
    session.add_all(rows)
    session.commit()
    assert backfill(app).published == 3
    stored = rows_by_id(session)
    ordered = sorted(stored.values(), key=lambda row: row.created_at)
    leads = [
        opens.timestamp() - sdk.message.get(row.qstash_message_id).not_before / 1000
        for row in ordered
    ]
    assert leads == [3, 4, 5]
