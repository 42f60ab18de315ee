"""POST /api/qstash/tasks/<task_name>: QStash deliveries of shim tasks (signature verified)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from flask_app.shim import delivery
from flask_app.shim.binding import get_celery, get_plugs

bp = Blueprint("task_callbacks", __name__)


@bp.post("/api/qstash/tasks/<path:task_name>")
def run_task(task_name: str) -> ResponseReturnValue:
    """Verify the signature, then run the task once (a task's own failure still answers 200)."""
    flask_app = current_app._get_current_object()  # type: ignore[attr-defined]
    url = delivery.task_url(flask_app, task_name)  # the URL QStash was given (and signed)
    raw = get_plugs(flask_app).verify(url)  # the app's verified-request helper (fails closed)
    if raw is None:
        return jsonify(error="invalid or missing Upstash-Signature"), 401
    retried = request.headers.get("Upstash-Retried", "")
    answer = delivery.receive(
        flask_app,
        get_celery(flask_app),
        task_name,
        raw,
        message_id=request.headers.get("Upstash-Message-Id"),
        retried=int(retried) if retried.isdigit() else None,
    )
    headers = {"Upstash-NonRetryable-Error": "true"} if answer.non_retryable else {}
    return jsonify(answer.body), answer.status, headers
