"""QStash's deliveries: the verified-request helper, the delivery handling and its blueprint.

`verified_body()` is the one signature check of the service (raw body + `Upstash-Signature`
against the public URL): this module's route `/api/qstash/prebooking-execute` uses it, and
`create_app` hands it to the shim for `/api/qstash/tasks/<name>`.

A delivery arms its prebooking with the process's dispatcher (one conditional UPDATE) and is
answered at once; the dispatcher fires it at its class's instant, in FIFO order
(flask_app/core/dispatch.py, docs/firing.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from flask_app import paths
from flask_app.api.errors import error
from flask_app.api.schemas import describe
from flask_app.core.dispatch import Admission, ArmResult, Arrival, get_dispatcher
from flask_app.core.execution import Attempt, get_executor
from flask_app.observe import metrics
from flask_app.qstash import signature
from flask_app.qstash.planning import EXECUTE_PATH

log = logging.getLogger(__name__)

bp = Blueprint("callbacks", __name__)

#: QStash's status for "do not retry" (with the Upstash-NonRetryable-Error header).
NON_RETRYABLE = 489


class DeliveryBody(BaseModel):
    """The JSON QStash delivers to /api/qstash/prebooking-execute (CONTRACT.md)."""

    model_config = ConfigDict(extra="ignore")

    prebooking_id: str = Field(alias="prebookingId", min_length=1, max_length=64)
    user_email: str = Field(alias="userEmail", max_length=320)
    scheduled_at: AwareDatetime = Field(alias="scheduledAt")


@dataclass(frozen=True)
class Reply:
    """What the webhook answers QStash: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


# --- the verified request -------------------------------------------------------------------


def verified_body(url: str | None = None) -> bytes | None:
    """The current request's raw body if QStash signed it for `url`; None otherwise.

    `url` defaults to our public URL for this route (`APP_BASE_URL` + the path): the `sub`
    claim is the URL QStash was told to call, not `request.url` (which a proxy rewrites). The
    signature covers the raw bytes, so the body is never re-serialised. Fails closed.
    """
    raw = request.get_data()
    cfg = current_app.config
    url = url or cfg["APP_BASE_URL"].rstrip("/") + request.path
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
    raw = verified_body()
    if raw is None:
        return error(401, "invalid or missing Upstash-Signature")
    headers = {name: value for name, value in request.headers.items()}
    reply = handle_delivery(raw, headers, arrived_at)
    response = jsonify(reply.body)
    response.headers.update(reply.headers)
    return response, reply.status


@bp.after_request
def _count_response(response: Response) -> Response:
    metrics.webhook_response(response.status_code)
    return response


# --- deliveries -----------------------------------------------------------------------------


def handle_delivery(raw_body: bytes, headers: Mapping[str, str], now: datetime) -> Reply:
    """Answer one verified QStash delivery (the signature was checked by the caller).

    The delivery arms its prebooking with the dispatcher (one conditional UPDATE) and is
    answered at once: the dispatcher fires it at its instant, retries AimHarder's transient
    and too-early answers itself, and the sweep covers what is left (docs/firing.md). QStash's
    retries are only for deliveries the app could not take (database down, dispatcher full).
    """
    try:
        body = DeliveryBody.model_validate_json(raw_body)
    except ValidationError as exc:
        # Signed by our QStash but unreadable: retrying cannot fix it.
        return _non_retryable(f"invalid delivery body: {describe(exc)[0]}")
    config = current_app.config
    message_id = headers.get("Upstash-Message-Id")
    retried = _as_int(headers.get("Upstash-Retried"))
    if config["QSTASH_SHADOW"]:
        seen = paths.arrive(
            get_executor(),
            paths.SHADOW,
            body.prebooking_id,
            arrived_at=now,
            message_id=message_id,
            retried=retried,
        )
        return Reply(200, _describe(seen) | {"shadow": True})
    if not config["QSTASH_ENABLED"]:
        log.info(
            "QStash delivery %s for %s ignored: QSTASH_ENABLED is false",
            message_id,
            body.prebooking_id,
        )
        return Reply(
            200, {"prebookingId": body.prebooking_id, "ignored": "QSTASH_ENABLED is false"}
        )
    arrival = Arrival(paths.QSTASH, now, message_id, retried)
    dispatcher = get_dispatcher()
    try:
        admitted = dispatcher.arm(body.prebooking_id, arrival, opening=body.scheduled_at)
    except SQLAlchemyError as exc:  # nothing was claimed without the database: QStash retries
        log.warning("delivery %s: database trouble: %s", message_id, type(exc).__name__)
        return Reply(503, {"error": "database unavailable; QStash will retry"})
    if admitted.result in (ArmResult.LOST, ArmResult.NOT_FOUND):
        dispatcher.note_lost(body.prebooking_id, arrival)  # recorded off the request path
    return reply_for(admitted)


def reply_for(admitted: Admission) -> Reply:
    """Map what arming did to QStash's language: 2xx done, 5xx retry."""
    body: dict[str, Any] = {"prebookingId": admitted.prebooking_id, "action": admitted.result.value}
    if admitted.result is ArmResult.FULL:
        # Nothing was claimed: QStash delivers it again, by then the burst may have passed.
        return Reply(503, body | {"error": "dispatcher at its limit; QStash will retry"})
    if admitted.fire_at is not None:
        body["fire_at"] = admitted.fire_at.isoformat()
    return Reply(200, body)


def _describe(attempt: Attempt) -> dict[str, Any]:
    return {
        "prebookingId": attempt.prebooking_id,
        "action": attempt.action.value,
        "status": attempt.status,
        "outcome": attempt.outcome.value if attempt.outcome else None,
        "lateness_ms": attempt.lateness_ms,
        "fire_lateness_ms": attempt.fire_lateness_ms,
        "detail": attempt.detail,
    }


def _non_retryable(message: str) -> Reply:
    return Reply(NON_RETRYABLE, {"error": message}, {"Upstash-NonRetryable-Error": "true"})


def _as_int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None
