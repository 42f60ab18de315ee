"""Moving existing work onto QStash and back: the `flask migration` command group.

flask --app wsgi migration status
flask --app wsgi migration backfill [--dry-run] [--batch-size N] [--min-notice S]
flask --app wsgi migration rollback [--dry-run]
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy.orm import Session

from flask_app import paths
from flask_app.db import get_db
from flask_app.qstash import gateway, publish
from migration.backfill import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MIN_NOTICE,
    Summary,
    count_unpublished,
    run_backfill,
)
from migration.rollback import RollbackSummary, count_outstanding, run_rollback
from migration.status import collect_status

__all__ = ["cli", "init_app"]

SHOW_LINES = 20  # a dry run lists this many planned rows, then counts the rest

cli = AppGroup("migration", help="Move pending prebookings onto QStash (backfill) and back.")


def init_app(app: Flask) -> None:
    """Register the `migration` command group."""
    app.cli.add_command(cli)


def _session_factory(app: Flask) -> Callable[[], Session]:
    return get_db(app).sessions


def _progress(total: int, desc: str) -> AbstractContextManager[Any]:
    """A tqdm bar on stderr (quiet when there is nothing to do)."""
    if total == 0:
        return nullcontext(None)
    from tqdm import tqdm

    bar: AbstractContextManager[Any] = tqdm(
        total=total, desc=desc, unit="row", file=sys.stderr, mininterval=0.2
    )
    return bar


def _min_notice(app: Flask, seconds: float | None) -> timedelta:
    """Windows opening sooner are left to cron; with no polling path running, none are."""
    if seconds is not None:
        return timedelta(seconds=seconds)
    if not paths.has_polling_path(app.config):
        return timedelta(0)
    configured = app.config.get("MIGRATION_MIN_NOTICE_SECONDS")
    return DEFAULT_MIN_NOTICE if configured is None else timedelta(seconds=float(configured))


def _quiet_http_logs() -> None:
    """One INFO line per QStash request would tear the progress bar apart."""
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _is_qstash_on(app: Flask) -> bool:
    return bool(app.config.get("QSTASH_ENABLED") or app.config.get("QSTASH_SHADOW"))


@cli.command("backfill")
@click.option("--dry-run", is_flag=True, help="Publish nothing; print the plan.")
@click.option("--batch-size", type=click.IntRange(1, 1000), default=DEFAULT_BATCH_SIZE)
@click.option(
    "--min-notice",
    type=click.FloatRange(0),
    default=None,
    help="Seconds; windows opening sooner are left to cron (default 60; 0 with cron off).",
)
@click.option("--force", is_flag=True, help="Publish even when the QStash path is off.")
def backfill_command(dry_run: bool, batch_size: int, min_notice: float | None, force: bool) -> None:
    """Publish a QStash message for every pending prebooking that has none."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    off = (
        "the QStash path is off (QSTASH_ENABLED and QSTASH_SHADOW are false): its deliveries "
        "would be ignored. Turn one on first, or pass --force."
    )
    if not force and not _is_qstash_on(app):
        if not dry_run:
            raise click.ClickException(off)
        click.echo(f"warning: the real run would refuse: {off}", err=True)
    _quiet_http_logs()
    factory = _session_factory(app)
    with factory() as session:
        total = count_unpublished(session)
    click.echo(f"backfill: {total} pending prebookings without a QStash message")
    with _progress(total, "backfill") as bar:
        summary = run_backfill(
            session_factory=factory,
            gateway=gateway.get_gateway(app),
            clock=lambda: datetime.now(UTC),
            policy=publish.policy_from(app.config),
            rollout_percent=int(app.config.get("QSTASH_ROLLOUT_PERCENT", 100)),
            min_notice=_min_notice(app, min_notice),
            batch_size=batch_size,
            dry_run=dry_run,
            progress=bar,
        )
    _echo_backfill(summary)
    if summary.failed:
        raise SystemExit(1)


def _echo_backfill(s: Summary) -> None:
    """Print the plan (dry run) or the outcome."""
    if s.dry_run:
        click.echo(f"dry run: would publish {len(s.planned)} messages (nothing was published)")
        for url in dict.fromkeys(msg.url for _, msg in s.planned):
            click.echo(f"  destination: {url}")
        for pid, msg in s.planned[:SHOW_LINES]:
            at = "now" if msg.not_before is None else _iso(msg.not_before)
            click.echo(f"  {pid}  deliver_at={at}  dedup={msg.deduplication_id}")
        if len(s.planned) > SHOW_LINES:
            click.echo(f"  ... and {len(s.planned) - SHOW_LINES} more")
    else:
        click.echo(f"published:    {s.published}")
        click.echo(f"deduplicated: {s.deduplicated} (QStash already had them; ids stored)")
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(s.skipped.items())) or "none"
    click.echo(f"skipped:      {sum(s.skipped.values())} ({skipped})")
    if not s.dry_run:
        click.echo(f"failed:       {s.failed}")
        click.echo(f"raced:        {s.raced} (row changed while publishing; message cancelled)")
    for error in dict.fromkeys(s.errors):
        click.echo(f"error: {error}", err=True)
    if s.aborted:
        click.echo("stopped early: QStash failed several batches in a row; rerun later", err=True)


def _iso(unix_s: int) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat()


@cli.command("rollback")
@click.option("--dry-run", is_flag=True, help="Cancel nothing; print what would be cancelled.")
@click.option("--batch-size", type=click.IntRange(1, 1000), default=500)
def rollback_command(dry_run: bool, batch_size: int) -> None:
    """Cancel the QStash messages of pending prebookings and clear their ids (cron carries them)."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.config.get("QSTASH_ENABLED") and not dry_run:
        click.echo(
            "warning: QSTASH_ENABLED is still true, so new prebookings keep getting messages "
            "and the relay (cron tick, relay schedule) re-publishes the rolled-back ones; "
            "set it to false (and restart) for a full rollback",
            err=True,
        )
    _quiet_http_logs()
    factory = _session_factory(app)
    with factory() as session:
        total = count_outstanding(session)
    click.echo(f"rollback: {total} pending prebookings hold a QStash message")
    with _progress(total, "rollback") as bar:
        summary = run_rollback(
            session_factory=factory,
            gateway=gateway.get_gateway(app),
            chunk_size=batch_size,
            dry_run=dry_run,
            progress=bar,
        )
    _echo_rollback(summary)
    if summary.failed:
        raise SystemExit(1)


def _echo_rollback(s: RollbackSummary) -> None:
    """Print what would be cancelled (dry run) or what was."""
    if s.dry_run:
        click.echo(f"dry run: would cancel {len(s.planned)} messages (nothing was cancelled)")
        for pid, mid in s.planned[:SHOW_LINES]:
            click.echo(f"  {pid}  {mid}")
        if len(s.planned) > SHOW_LINES:
            click.echo(f"  ... and {len(s.planned) - SHOW_LINES} more")
        return
    click.echo(f"cancelled at QStash: {s.cancelled} (delivered or unknown ones are not counted)")
    click.echo(f"cleared:             {s.cleared} (ids cleared, generation bumped)")
    click.echo(f"failed:              {s.failed}")
    for error in dict.fromkeys(s.errors):
        click.echo(f"error: {error}", err=True)
    if s.aborted:
        click.echo("stopped early: QStash failed several chunks in a row; rerun later", err=True)


@cli.command("status")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--min-notice", type=click.FloatRange(0), default=None, help="As for backfill.")
def status_command(fmt: str, min_notice: float | None) -> None:
    """Count prebookings by state: pending with/without a message, and what backfill would do."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    counts = collect_status(
        session_factory=_session_factory(app),
        now=datetime.now(UTC),
        policy=publish.policy_from(app.config),
        rollout_percent=int(app.config.get("QSTASH_ROLLOUT_PERCENT", 100)),
        min_notice=_min_notice(app, min_notice),
    )
    if fmt == "json":
        click.echo(json.dumps(counts, indent=2))
        return
    for key, value in counts.items():
        click.echo(f"{key:<36} {value}")
