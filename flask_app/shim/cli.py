"""`flask tasks ...`: sync the beat schedule to QStash schedules."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from flask_app.shim import beat
from flask_app.shim.binding import get_celery, get_plugs
from flask_app.shim.delivery import task_url
from flask_app.shim.exceptions import UnsupportedOption

tasks_cli = AppGroup("tasks", help="Tasks of the Celery-compatible shim.")


@tasks_cli.command("sync-schedules")
@click.option("--dry-run", is_flag=True, help="Show the plan without changing QStash.")
def sync_schedules(dry_run: bool) -> None:
    """Create, update and delete QStash schedules to match beat_schedule (idempotent)."""
    celery = get_celery(current_app)
    try:
        desired = beat.desired_schedules(
            celery.conf.beat_schedule,
            url_for_task=lambda name: task_url(current_app, name),
            timezone=celery.conf.get("timezone"),
            default_queue=celery.conf.task_default_queue,
        )
        publisher = get_plugs(current_app).publisher
        try:
            plan = beat.plan_sync(desired, publisher.schedules())
            _report(plan)
            if not dry_run:
                beat.apply_plan(plan, publisher)
        except Exception as exc:  # the publisher's own errors (QStash down or refusing)
            raise click.ClickException(f"QStash: {exc}") from exc
    except (UnsupportedOption, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def _report(plan: beat.SyncPlan) -> None:
    for label, ids in (
        ("create", [s.schedule_id for s in plan.create]),
        ("update", [s.schedule_id for s in plan.update]),
        ("delete", plan.delete),
        ("unchanged", plan.unchanged),
    ):
        for sid in ids:
            click.echo(f"{label} {sid}")
    click.echo(
        f"created={len(plan.create)} updated={len(plan.update)} "
        f"deleted={len(plan.delete)} unchanged={len(plan.unchanged)}"
    )
