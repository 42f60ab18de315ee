"""Rollback end to end: messages cancelled at qstash_dev, ids cleared, generations bumped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from qstash.errors import QStashError as SdkError

from flask_app.db import get_db
from flask_app.qstash.gateway import QStashUnavailable, get_gateway
from migration.rollback import run_rollback
from tests.migration.conftest import rows_by_id, seed


def published(runner: Any) -> None:
    result = runner.invoke(args=["migration", "backfill"])
    assert result.exit_code == 0, result.output


def test_rollback_cancels_the_messages_clears_the_ids_and_bumps_the_generation(
    app, runner, session, sdk, qstash_server
):
    ids = seed(session, 5)
    published(runner)
    before = {pid: r.qstash_message_id for pid, r in rows_by_id(session).items()}
    assert qstash_server.broker.pending_count() == 5

    result = runner.invoke(args=["migration", "rollback"])

    assert result.exit_code == 0, result.output
    assert "cancelled at QStash: 5" in result.output
    assert "cleared:             5" in result.output
    assert qstash_server.broker.pending_count() == 0
    for message_id in before.values():
        with pytest.raises(SdkError):
            sdk.message.get(message_id or "")
    rows = rows_by_id(session)
    assert [(rows[p].qstash_message_id, rows[p].qstash_generation) for p in ids] == [(None, 1)] * 5


def test_a_second_rollback_finds_nothing_to_do(app, runner, session):
    seed(session, 3)
    published(runner)
    runner.invoke(args=["migration", "rollback"])
    again = runner.invoke(args=["migration", "rollback"])
    assert again.exit_code == 0
    assert "rollback: 0 pending prebookings hold a QStash message" in again.output
    assert "cleared:             0" in again.output
    assert {r.qstash_generation for r in rows_by_id(session).values()} == {1}


def test_rollback_dry_run_cancels_nothing_and_lists_what_it_would(
    app, runner, session, qstash_server
):
    seed(session, 2)
    published(runner)
    rows = rows_by_id(session)
    result = runner.invoke(args=["migration", "rollback", "--dry-run"])
    assert result.exit_code == 0
    assert "dry run: would cancel 2 messages (nothing was cancelled)" in result.output
    for pid, row in rows.items():
        assert f"{pid}  {row.qstash_message_id}" in result.output
    assert qstash_server.broker.pending_count() == 2
    assert all(
        r.qstash_message_id and r.qstash_generation == 0 for r in rows_by_id(session).values()
    )


def test_a_backfill_after_a_rollback_publishes_fresh_messages(
    app, runner, session, sdk, qstash_server
):
    ids = seed(session, 4)
    published(runner)
    first = {pid: r.qstash_message_id for pid, r in rows_by_id(session).items()}
    runner.invoke(args=["migration", "rollback"])

    result = runner.invoke(args=["migration", "backfill"])

    assert "published:    4" in result.output  # not deduplicated away by QStash's window
    assert "deduplicated: 0" in result.output
    rows = rows_by_id(session)
    assert all(rows[p].qstash_message_id not in (None, first[p]) for p in ids)
    assert qstash_server.broker.pending_count() == 4
    for pid in ids:
        assert sdk.message.get(rows[pid].qstash_message_id or "").message_id


def test_rollback_leaves_prebookings_that_are_not_pending_alone(app, runner, session):
    seed(session, 2)
    published(runner)
    rows = rows_by_id(session)
    done = next(iter(rows.values()))
    done.status = "completed"
    session.commit()
    runner.invoke(args=["migration", "rollback"])
    after = rows_by_id(session)[done.id]
    assert (after.qstash_message_id, after.qstash_generation) == (done.qstash_message_id, 0)


def test_a_chunk_qstash_cannot_cancel_keeps_its_ids_for_a_rerun(app, runner, session):
    seed(session, 3)
    published(runner)

    class Down:
        def cancel_many(self, message_ids: Sequence[str]) -> int:
            raise QStashUnavailable("QStash unreachable")

    summary = run_rollback(session_factory=get_db(app).sessions, gateway=Down())
    assert (summary.failed, summary.cleared) == (3, 0)
    assert all(r.qstash_message_id for r in rows_by_id(session).values())
    summary = run_rollback(session_factory=get_db(app).sessions, gateway=get_gateway(app))
    assert (summary.cancelled, summary.cleared) == (3, 3)


def test_rollback_warns_when_the_qstash_path_is_still_on(app, runner, session):
    result = runner.invoke(args=["migration", "rollback"])
    assert "QSTASH_ENABLED is still true" in result.output


def test_rollback_stops_after_three_chunks_fail_in_a_row(app, runner, session):
    seed(session, 10)
    published(runner)

    class Down:
        calls = 0

        def cancel_many(self, message_ids: Sequence[str]) -> int:
            Down.calls += 1
            raise QStashUnavailable("QStash unreachable")

    factory = get_db(app).sessions
    summary = run_rollback(session_factory=factory, gateway=Down(), chunk_size=2)
    assert (Down.calls, summary.failed, summary.aborted) == (3, 6, True)
    assert all(r.qstash_message_id for r in rows_by_id(session).values())
