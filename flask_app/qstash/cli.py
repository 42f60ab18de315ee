"""`flask --app wsgi qstash ...`: maintenance commands of the QStash path."""

from __future__ import annotations

import json

import click
from flask import Flask
from flask.cli import AppGroup

from flask_app.core.execution import get_executor
from flask_app.db import get_db
from flask_app.qstash import dlq, relay

qstash_cli = AppGroup("qstash", help="QStash path: relay late publishes, reconcile the DLQ.")


@qstash_cli.command("relay")
def relay_command() -> None:
    """Publish pending prebookings that came within QStash's maximum delay (or failed before)."""
    with get_db().session() as session:
        report = relay.relay(session, get_executor().clock.now())
    click.echo(json.dumps(report.to_json()))


@qstash_cli.command("reconcile-dlq")
def reconcile_dlq_command() -> None:
    """Mark prebookings whose deliveries died in the DLQ (or hand them to cron); clear them."""
    with get_db().session() as session:
        report = dlq.reconcile_dlq(session, get_executor().clock.now())
    click.echo(json.dumps(report.to_json()))


def init_app(app: Flask) -> None:
    """Register the `qstash` command group."""
    app.cli.add_command(qstash_cli)
