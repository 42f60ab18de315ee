"""Binding a shim app to a Flask app: plugs, settings, task modules, endpoint, CLI, cleanup."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask

from flask_app.shim import _state, webhook
from flask_app.shim.binding import CELERY_EXT, PLUGS_EXT, get_celery
from flask_app.shim.cli import tasks_cli
from flask_app.shim.conf import DEFAULTS
from flask_app.shim.plugs import Plugs
from flask_app.shim.schedules import crontab

if TYPE_CHECKING:
    from flask_app.shim.app import Celery

__all__ = ["BACKEND_CLEANUP", "get_celery", "init_app"]

# Flask config keys (upper-case, as env/test_config give them) -> Celery settings.
_FLASK_KEYS = {
    "TASK_ALWAYS_EAGER": "task_always_eager",
    "TASK_EAGER_PROPAGATES": "task_eager_propagates",
    "TASK_STORE_EAGER_RESULT": "task_store_eager_result",
    "QSTASH_MAX_DELAY_S": "qstash_max_delay_s",
    "RESULT_EXPIRES": "result_expires",
    "TASK_LEASE_SECONDS": "task_lease_seconds",
}
#: Celery's beat entry (and task) that deletes expired results, daily at 04:00 as in Celery.
BACKEND_CLEANUP = "celery.backend_cleanup"


def init_app(
    flask_app: Flask, celery: Celery | None = None, *, plugs: Plugs | None = None
) -> Celery:
    """Bind the (current) shim app to flask_app and import TASK_IMPORTS; returns the shim app.

    plugs: the publisher, database and verifier the shim uses (see flask_app.shim.plugs); the
    ones given before stay when None.
    """
    celery = celery or _state.get_current_app()
    settings: dict[str, Any] = dict(flask_app.config.get("CELERY") or {})
    for key, setting in _FLASK_KEYS.items():
        # The Flask config is the source of truth once bound (tests create many apps).
        settings[setting] = flask_app.config.get(key, settings.get(setting, DEFAULTS[setting]))
    max_delay = flask_app.config.get("QSTASH_MAX_DELAY")
    if "QSTASH_MAX_DELAY_S" not in flask_app.config and max_delay is not None:
        # One knob for the whole service: the QStash path's QSTASH_MAX_DELAY (a timedelta).
        settings["qstash_max_delay_s"] = max_delay.total_seconds()
    celery.conf.update(settings)
    celery.flask_app = flask_app
    if plugs is not None:
        flask_app.extensions[PLUGS_EXT] = plugs
    flask_app.extensions[CELERY_EXT] = celery
    imports = flask_app.config.get("TASK_IMPORTS") or ""
    celery.conf["imports"] = tuple(
        dict.fromkeys([*_split(imports), *_split(settings.get("imports"))])
    )
    celery.import_task_modules()
    if celery.conf.get("result_expires"):
        # Celery's beat installs this entry whenever results expire (the backend can't do it).
        celery.conf.beat_schedule.setdefault(
            BACKEND_CLEANUP,
            {"task": BACKEND_CLEANUP, "schedule": crontab(minute=0, hour=4)},
        )
    if "task_callbacks" not in flask_app.blueprints:
        flask_app.register_blueprint(webhook.bp)
    if "tasks" not in flask_app.cli.commands:
        flask_app.cli.add_command(tasks_cli)
    return celery


def _split(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value or ()]
