"""/api/qstash/*: verify QStash's signature against the raw body, then hand off to delivery."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request

from flask_app.api.errors import error
from flask_app.core.execution import get_executor
from flask_app.observe import metrics
from flask_app.qstash import delivery, signature
from flask_app.qstash.planning import EXECUTE_PATH

log = logging.getLogger(__name__)

bp = Blueprint("callbacks", __name__)


def _verified() -> bytes | None:
    """The raw body if QStash signed it for our public URL; None otherwise (fails closed)."""
    raw = request.get_data()
    cfg = current_app.config
    # The `sub` claim is the URL QStash was told to call: our public URL, not request.url
    # (which a proxy rewrites).
    url = cfg["APP_BASE_URL"].rstrip("/") + request.path
    try:
        signature.verify(
            raw,
            request.headers.get("Upstash-Signature"),
            url,
            current_key=cfg.get("QSTASH_CURRENT_SIGNING_KEY"),
            next_key=cfg.get("QSTASH_NEXT_SIGNING_KEY"),
        )
    except signature.InvalidSignature as exc:
        log.warning("QStash delivery refused: %s", exc)
        return None
    return raw


@bp.post(EXECUTE_PATH)
def prebooking_execute() -> tuple[Response, int]:
    arrived_at = get_executor().clock.now()
    raw = _verified()
    if raw is None:
        return error(401, "invalid or missing Upstash-Signature")
    headers = {name: value for name, value in request.headers.items()}
    reply = delivery.handle_delivery(raw, headers, arrived_at)
    response = jsonify(reply.body)
    response.headers.update(reply.headers)
    return response, reply.status


@bp.after_request
def _count_response(response: Response) -> Response:
    metrics.webhook_response(response.status_code)
    return response
