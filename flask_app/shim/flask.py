"""Binding a shim app to a Flask app: settings, task modules, the task endpoint, the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask

if TYPE_CHECKING:
    from flask_app.shim.app import Celery

_EXT = "celery"
_VERIFIER_EXT = "celery.verifier"

#: Given the public URL a task was published to: the current request's raw body if QStash
#: signed it for that URL, else None (the task endpoint then answers 401).
Verifier = Callable[[str], bytes | None]

# Flask config keys (upper-case, as env/test_config give them) -> Celery settings.
_FLASK_KEYS = {
    "TASK_ALWAYS_EAGER": "task_always_eager",
    "TASK_EAGER_PROPAGATES": "task_eager_propagates",
    "TASK_STORE_EAGER_RESULT": "task_store_eager_result",
    "QSTASH_MAX_DELAY_S": "qstash_max_delay_s",
}


def init_app(
    flask_app: Flask, celery: Celery | None = None, *, verifier: Verifier | None = None
) -> Celery:
    """Bind the (current) shim app to flask_app and import TASK_IMPORTS; returns the shim app.

    `verifier` checks the signature of task deliveries; without one, every delivery is refused.
    """
    from flask_app.qstash import gateway
    from flask_app.shim import _state, webhook
    from flask_app.shim.app import DEFAULTS
    from flask_app.shim.cli import tasks_cli

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
    if "qstash" not in flask_app.extensions:
        gateway.init_app(flask_app)
    flask_app.extensions[_EXT] = celery
    if verifier is not None:
        flask_app.extensions[_VERIFIER_EXT] = verifier
    imports = flask_app.config.get("TASK_IMPORTS") or ""
    celery.conf["imports"] = tuple(
        dict.fromkeys([*_split(imports), *_split(settings.get("imports"))])
    )
    celery.import_task_modules()
    if "task_callbacks" not in flask_app.blueprints:
        flask_app.register_blueprint(webhook.bp)
    if "tasks" not in flask_app.cli.commands:
        flask_app.cli.add_command(tasks_cli)
    return celery


def _split(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value or ()]


def get_celery(flask_app: Flask) -> Celery:
    """The shim app bound to flask_app."""
    celery: Celery = flask_app.extensions[_EXT]
    return celery


def get_verifier(flask_app: Flask) -> Verifier:
    """The request verifier the app handed the shim (fails closed when none was given)."""
    verifier: Verifier = flask_app.extensions.get(_VERIFIER_EXT, _refuse)
    return verifier


def _refuse(_url: str) -> bytes | None:
    return None
