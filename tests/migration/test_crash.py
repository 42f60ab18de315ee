"""A backfill process killed with SIGKILL mid-run, then rerun: one message per prebooking."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flask_app.models import Prebooking
from tests.migration.conftest import APP_BASE_URL, rows_by_id, seed

ROOT = Path(__file__).resolve().parents[2]
N = 400


def stored(session: Session) -> int:
    """Prebookings that hold a message id."""
    session.expire_all()
    query = select(func.count()).where(Prebooking.qstash_message_id.is_not(None))
    return session.scalar(query.select_from(Prebooking)) or 0


@pytest.mark.slow
def test_a_killed_backfill_process_rerun_leaves_exactly_one_message_per_prebooking(
    app, runner, session, qstash_server, db_url
):
    ids = seed(session, N)
    env = os.environ | {
        "DATABASE_URL": db_url,
        "QSTASH_URL": qstash_server.url,
        "QSTASH_TOKEN": qstash_server.token,
        "QSTASH_ENABLED": "true",
        "APP_BASE_URL": APP_BASE_URL,
    }
    # Batches of one make the run long enough to kill it part-way, deterministically enough.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flask",
            "--app",
            "wsgi",
            "migration",
            "backfill",
            "--batch-size",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while stored(session) < 20 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    killed_at = stored(session)
    assert proc.returncode == -signal.SIGKILL
    assert 20 <= killed_at < N  # it really died part-way

    result = runner.invoke(args=["migration", "backfill"])

    assert result.exit_code == 0, result.output
    rows = rows_by_id(session)
    message_ids = [rows[pid].qstash_message_id for pid in ids]
    assert all(message_ids) and len(set(message_ids)) == N
    assert qstash_server.broker.pending_count() == N  # QStash holds no duplicate
