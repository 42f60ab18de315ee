"""POST /api/qstash/tasks/<task_name>: QStash deliveries of shim tasks (signature verified)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from flask_app.observe import metrics
from flask_app.qstash.signature import InvalidSignature, verify
from flask_app.shim import delivery
from flask_app.shim.flask import get_celery

bp = Blueprint("task_callbacks", __name__)


@bp.post("/api/qstash/tasks/<path:task_name>")
def run_task(task_name: str) -> ResponseReturnValue:
    """Verify the signature, then run the task once (a task's own failure still answers 200)."""
    raw = request.get_data(cache=False)
    config = current_app.config
    url = delivery.task_url(current_app, task_name)  # the URL QStash was given (and signed)
    try:
        verify(
            raw,
            request.headers.get("Upstash-Signature"),
            url,
            current_key=config.get("QSTASH_CURRENT_SIGNING_KEY"),
            next_key=config.get("QSTASH_NEXT_SIGNING_KEY"),
        )
    except InvalidSignature as exc:
        return jsonify(error=str(exc)), 401
    retried = request.headers.get("Upstash-Retried", "")
    answer = delivery.receive(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        get_celery(current_app),
        task_name,
        raw,
        message_id=request.headers.get("Upstash-Message-Id"),
        retried=int(retried) if retried.isdigit() else None,
    )
    headers = {"Upstash-NonRetryable-Error": "true"} if answer.non_retryable else {}
    return jsonify(answer.body), answer.status, headers


@bp.after_request
def _count_response(response: Response) -> Response:
    metrics.webhook_response(response.status_code)
    return response
