"""The pure parts of a tick: which prebookings are due, in what order, and how it counts."""

from datetime import UTC, datetime, timedelta

import pytest

from flask_app.core.dispatch import ArmResult
from legacy_cron.scheduler import Candidate, TickReport, TickSettings, count, due_prebookings

NOW = datetime(2026, 11, 30, 15, 0, 0, tzinfo=UTC)
S = timedelta(seconds=1)


def row(id_="a", status="pending", available_at=NOW - S, created_at=NOW - 60 * S, expires=None):
    return Candidate(id_, status, available_at, created_at, expires)


@pytest.mark.parametrize(
    ("candidate", "due"),
    [
        (row(available_at=NOW - S), True),
        (row(available_at=NOW), True),
        (row(available_at=NOW + S), False),
        (row(status="loaded", expires=NOW - S), True),  # the owner died: recoverable
        (row(status="loaded", expires=NOW + S), False),  # a live claim: someone is booking it
        (row(status="loaded", expires=None), False),
        (row(status="completed"), False),
        (row(status="failed"), False),
        (row(status="cancelled"), False),
        (row(status="session_expired"), True),  # pre-flight found it dead: still tried
        (row(status="session_expired", available_at=NOW + S), False),
    ],
)
def test_due_means_open_and_pending_or_claimed_with_an_expired_lease(candidate, due):
    assert (due_prebookings([candidate], NOW, 50) == [candidate]) is due


def test_due_prebookings_come_oldest_request_first_with_id_breaking_ties():
    rows = [
        row("c", created_at=NOW - 10 * S),
        row("b", created_at=NOW - 30 * S),
        row("z", created_at=NOW - 30 * S, status="loaded", expires=NOW - S),
        row("a", created_at=NOW - 30 * S),
        row("later", created_at=NOW - 90 * S, available_at=NOW + S),
    ]
    assert [r.id for r in due_prebookings(rows, NOW, 50)] == ["a", "b", "z", "c"]


def test_due_prebookings_stop_at_the_limit_keeping_the_oldest():
    rows = [row(str(i), created_at=NOW - i * S) for i in range(10)]
    assert [r.id for r in due_prebookings(rows, NOW, 3)] == ["9", "8", "7"]


def test_settings_come_from_the_config():
    config = {"CRON_TICK_BUDGET_S": 12, "CRON_STAGGER_MS": 25, "CRON_BATCH_LIMIT": 7}
    assert TickSettings.from_config(config) == TickSettings(timedelta(seconds=12), 7)


def test_a_tick_counts_what_arming_each_candidate_did():
    status = ["pending", "loaded", "pending", "pending"]  # the second recovers a stale claim
    results = [ArmResult.ARMED, ArmResult.ARMED, ArmResult.LOST, ArmResult.FULL]
    report = TickReport("t")
    for i, admitted in enumerate(results):
        count(report, row(str(i), status=status[i]), admitted)
    assert report.to_json() == {
        "ran": True,
        "due": 0,
        "claimed": 2,
        "recovered": 1,
        "lost_claim": 1,
        "deferred": 1,
        "errors": 0,
        "relayed": 0,
        "duration_ms": 0,
        "tick_id": "t",
    }


def test_cron_settings_are_read_from_the_environment():
    from flask_app.config import ConfigError
    from legacy_cron.settings import DEFAULTS, settings_from_env

    env = {"CRON_TICK_BUDGET_S": "12", "CRON_STAGGER_MS": "0", "CRON_BATCH_LIMIT": "7"}
    assert settings_from_env(env | {"LEGACY_CRON_ENABLED": "off", "CRON_SECRET": " s "}) == {
        "CRON_TICK_BUDGET_S": 12,
        "CRON_STAGGER_MS": 0,
        "CRON_BATCH_LIMIT": 7,
        "LEGACY_CRON_ENABLED": False,
        "CRON_SECRET": "s",
    }
    limits = (
        DEFAULTS["CRON_TICK_BUDGET_S"],
        DEFAULTS["CRON_STAGGER_MS"],
        DEFAULTS["CRON_BATCH_LIMIT"],
    )
    assert limits == (20, 50, 50)
    with pytest.raises(ConfigError, match="CRON_BATCH_LIMIT must be at least 1"):
        settings_from_env({"CRON_BATCH_LIMIT": "0"})


def test_the_app_owns_the_cron_settings_only_through_legacy_cron(app):
    from flask_app.config import Settings, defaults

    assert not [name for name in Settings.model_fields if "CRON" in name]
    assert not [name for name in defaults() if "CRON" in name]
    assert app.config["CRON_BATCH_LIMIT"] == 50 and app.config["LEGACY_CRON_ENABLED"] is True


def test_legacy_cron_brings_its_settings_into_the_app(monkeypatch, tmp_path):
    from flask_app import close, create_app
    from flask_app.config import ConfigError

    monkeypatch.setenv("DEV_ENV_FILE", "")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'c.db'}")
    monkeypatch.setenv("CRON_BATCH_LIMIT", "7")
    monkeypatch.setenv("CRON_SECRET", "from-the-env")
    app = create_app()
    assert (app.config["CRON_BATCH_LIMIT"], app.config["CRON_SECRET"]) == (7, "from-the-env")
    assert app.config["CRON_TICK_BUDGET_S"] == 20
    close(app)
    monkeypatch.setenv("CRON_BATCH_LIMIT", "0")
    with pytest.raises(ConfigError, match="CRON_BATCH_LIMIT must be at least 1"):
        create_app()
