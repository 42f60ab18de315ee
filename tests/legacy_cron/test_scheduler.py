"""The pure parts of a tick: which prebookings are due, in what order, and what fits the budget."""

from datetime import UTC, datetime, timedelta

import pytest

from flask_app.aimharder.client import BookingOutcome
from flask_app.core.execution import Action, Attempt
from legacy_cron.scheduler import (
    Candidate,
    Launch,
    TickReport,
    TickSettings,
    due_prebookings,
    plan_tick,
    tally,
)

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


def settings(budget_s=20.0, stagger_ms=50, reserve_s=8.0, limit=50):
    return TickSettings(
        budget=timedelta(seconds=budget_s),
        stagger=timedelta(milliseconds=stagger_ms),
        limit=limit,
        reserve=timedelta(seconds=reserve_s),
    )


def test_plan_fires_candidate_i_at_the_start_plus_i_staggers():
    rows = [row(str(i)) for i in range(4)]
    plan = plan_tick(rows, NOW, settings())
    ms = timedelta(milliseconds=1)
    assert [launch.fire_at for launch in plan.launches] == [NOW + i * 50 * ms for i in range(4)]
    assert [launch.candidate for launch in plan.launches] == rows and plan.deferred == []


def test_plan_defers_what_could_not_finish_inside_the_budget():
    rows = [row(str(i)) for i in range(10)]
    plan = plan_tick(rows, NOW, settings(budget_s=1.0, stagger_ms=100, reserve_s=0.5))
    # 0.5 s reserve + i x 0.1 s must stay within 1 s: candidates 0..5 go, 6..9 wait.
    assert [launch.candidate.id for launch in plan.launches] == ["0", "1", "2", "3", "4", "5"]
    assert [c.id for c in plan.deferred] == ["6", "7", "8", "9"]


def test_plan_always_launches_the_first_candidate_even_with_a_tiny_budget():
    plan = plan_tick([row("0"), row("1")], NOW, settings(budget_s=1.0, reserve_s=8.0))
    assert [launch.candidate.id for launch in plan.launches] == ["0"]
    assert [c.id for c in plan.deferred] == ["1"]


def test_settings_come_from_the_config():
    config = {
        "CRON_TICK_BUDGET_S": 12,
        "CRON_STAGGER_MS": 25,
        "CRON_BATCH_LIMIT": 7,
        "AIMHARDER_TIMEOUT_S": 4.0,
    }
    assert TickSettings.from_config(config) == settings(12, 25, 4.0, limit=7)


def attempt(action, outcome=None, won=True):
    return Attempt("p", "cron", NOW, action, won=won, outcome=outcome)


def test_tally_counts_every_kind_of_result():
    status = ["pending", "loaded"] + ["pending"] * 6  # the second one recovers a stale claim
    launches = [Launch(row(str(i), status=status[i]), NOW) for i in range(8)]
    results = [
        attempt(Action.EXECUTED, BookingOutcome.BOOKED),
        attempt(Action.CONFIRMED, BookingOutcome.ALREADY_BOOKED),
        attempt(Action.EXECUTED, BookingOutcome.FULL),
        attempt(Action.FAILED),
        attempt(Action.RELEASED, BookingOutcome.TRANSIENT),
        attempt(Action.LOST_CLAIM, won=False),
        RuntimeError("boom"),
        None,
    ]
    report = TickReport("t")
    tally(report, launches, results)
    body = report.to_json()
    assert body == {
        "ran": True,
        "due": 0,
        "claimed": 5,
        "recovered": 1,
        "booked": 2,
        "failed": 2,
        "lost_claim": 1,
        "released": 1,
        "deferred": 0,
        "errors": 1,
        "running": 1,
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
    from flask_app import create_app
    from flask_app.config import ConfigError

    monkeypatch.setenv("DEV_ENV_FILE", "")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'c.db'}")
    monkeypatch.setenv("CRON_BATCH_LIMIT", "7")
    monkeypatch.setenv("CRON_SECRET", "from-the-env")
    app = create_app()
    assert (app.config["CRON_BATCH_LIMIT"], app.config["CRON_SECRET"]) == (7, "from-the-env")
    assert app.config["CRON_TICK_BUDGET_S"] == 20
    app.extensions["db"].engine.dispose()
    monkeypatch.setenv("CRON_BATCH_LIMIT", "0")
    with pytest.raises(ConfigError, match="CRON_BATCH_LIMIT must be at least 1"):
        create_app()
