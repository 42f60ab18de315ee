"""Celery's built-in tasks the shim keeps: `celery.backend_cleanup` (result_expires)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask_app.shim import backend, signals
from flask_app.shim.app import shared_task
from flask_app.shim.binding import flask_app_for
from flask_app.shim.flask import BACKEND_CLEANUP


@shared_task(name=BACKEND_CLEANUP, ignore_result=True, max_retries=0)
def backend_cleanup() -> dict[str, Any]:
    """Delete results older than result_expires, then let the host app prune its own data.

    The host app connects to `signals.backend_cleanup` (a shim signal, not Celery's) to clean
    up alongside, so one beat entry keeps every table bounded.
    """
    app = backend_cleanup.app
    now = datetime.now(UTC)
    expires = app.conf.get("result_expires")
    deleted: dict[str, Any] = {}
    if expires:
        age = expires if isinstance(expires, timedelta) else timedelta(seconds=float(expires))
        deleted = backend.cleanup(flask_app_for(app), now - age)
    signals.backend_cleanup.send(backend_cleanup, now=now, deleted=deleted)
    return deleted
