"""migration status: counts that the rollout runbook reads."""

from __future__ import annotations

import json
from datetime import timedelta

from tests.migration.conftest import seed


def test_status_counts_pending_work_by_what_backfill_would_do(app, runner, session):
    seed(session, 3)
    seed(session, 1, ahead=timedelta(seconds=-5))
    seed(session, 2, ahead=timedelta(days=20))
    seed(session, 1, status="completed")
    notice = ["--min-notice", "60"]  # as while cron runs (with no cron the default is 0)
    runner.invoke(args=["migration", "backfill", *notice])
    seed(session, 2)
    seed(session, 1, qstash_error="dlq: delivery failed 4 times")

    result = runner.invoke(args=["migration", "status", "--format", "json", *notice])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "backfill.would_publish": 2,
        "backfill.skip.due": 1,
        "backfill.skip.beyond_max_delay": 2,
        "pending.dead_lettered": 1,
        "pending.with_message": 3,
        "pending.with_publish_error": 0,
        "pending.without_message": 5,
        "status.completed": 1,
        "status.pending": 9,
    }


def test_status_prints_a_readable_table(app, runner, session):
    seed(session, 1)
    result = runner.invoke(args=["migration", "status"])
    assert result.exit_code == 0
    assert "pending.without_message" in result.output
    assert "backfill.would_publish" in result.output
