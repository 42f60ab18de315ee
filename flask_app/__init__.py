"""The prebooking service: create_app() is the one place where things are wired together."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

import legacy_cron
import migration
from flask_app import background, capacity, db, dbschema, notify, paths, periodic, shim_plugs
from flask_app.aimharder import gym_clock
from flask_app.api import admin, errors, login, openapi, tokens, views
from flask_app.config import FLASK_DEFAULTS, configure, default_database_url, read_environment
from flask_app.core import dispatch, execution, preflight, sessions, sweep
from flask_app.observe import comparison, logs, metrics, parity_cli, readiness
from flask_app.qstash import cli as qstash_cli
from flask_app.qstash import dlq, gateway, outbox, webhook

ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Create and configure an instance of the service."""
    app = Flask(__name__, instance_path=str(ROOT / "instance"))
    app.config.update(FLASK_DEFAULTS)
    configure(app, read_environment(ROOT) if test_config is None else None)
    if test_config is not None:
        app.config.update(test_config)
    if not app.config.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = default_database_url(app.instance_path)
    logs.init_app(app)
    errors.register(app)
    db.init_app(app)
    readiness.init_app(app)
    dbschema.init_app(app)
    background.init_app(app)
    sessions.init_app(app)
    gateway.init_app(app)
    execution.init_app(app)
    gym_clock.init_app(app)
    dispatch.init_app(app, telemetry=metrics.DispatchTelemetry(app))
    sweep.init_app(app)
    outbox.init_app(app)
    dlq.init_app(app)
    notify.init_app(app)
    preflight.init_app(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(webhook.bp)
    qstash_cli.init_app(app)
    comparison.init_app(app)
    parity_cli.init_app(app)
    app.register_blueprint(admin.bp)
    login.init_app(app)
    tokens.init_app(app)
    migration.init_app(app)
    shim_plugs.init_app(app)
    periodic.init_app(app)
    capacity.init_app(app)
    legacy_cron.init_app(app)  # the cron path: retiring it is deleting this line and legacy_cron/
    paths.check_coverage(app.config)
    return app


def close(app: Flask, timeout_s: float = 5.0) -> None:
    """Let go of everything `app` holds, in order: its background runner, its detached gym
    jobs, its dispatcher (what it holds unsent is released to pending for a live process's
    sweep; a booking in flight finishes and is recorded; its threads end), its AimHarder
    client, its database connections. gunicorn's worker_exit and the tests call it; nothing
    of the app touches the database afterwards."""
    background.get_runner(app).stop(timeout_s)
    for detached in preflight.threads(app).values():
        detached.join(timeout_s)
    dispatch.get_dispatcher(app).stop(timeout_s)
    close_client = getattr(execution.get_executor(app).client, "close", None)  # fakes have none
    if callable(close_client):
        close_client()
    app.extensions["db"].engine.dispose()
