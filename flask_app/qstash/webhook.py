"""QStash's deliveries: the verified-request helper, the delivery handling and its blueprint.

`verified_body()` is the one signature check of the service (raw body + `Upstash-Signature`
against the public URL): this module's route `/api/qstash/prebooking-execute` uses it, and
`create_app` hands it to the shim for `/api/qstash/tasks/<name>`.

A delivery claims the prebooking, waits with a precise timer until its fire instant
(`available_at` plus a FIFO stagger among prebookings opening at the same instant) and books.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from flask_app import paths
from flask_app.api.errors import error
from flask_app.api.schemas import describe
from flask_app.core.execution import Action, Attempt, get_executor
from flask_app.core.prebooking import Event, sources
from flask_app.db import get_db
from flask_app.models import Prebooking
from flask_app.observe import metrics
from flask_app.qstash import signature
from flask_app.qstash.planning import EXECUTE_PATH
from flask_app.qstash.publish import twins_of

log = logging.getLogger(__name__)

bp = Blueprint("callbacks", __name__)

#: Outcomes are recorded this long after the last of a burst of twins fired (see FireSlot).
SETTLE_MARGIN = timedelta(milliseconds=20)
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


@dataclass(frozen=True)
class FireSlot:
    """Where a prebooking fires among the prebookings opening at the same instant (twins)."""

    fire_at: datetime  # its opening plus one stagger per earlier-created twin (FIFO)
    settle_at: datetime  # after the last twin fired: record the outcome from then on


def fire_slot(session: Session, row: Prebooking, stagger: timedelta) -> FireSlot:
    """Rank the row among its twins by (created_at, id), with one indexed count query.

    Every status counts, so the rank of a prebooking never changes while its twins fire.
    """
    twins = twins_of([row.available_at])
    earlier = or_(
        Prebooking.created_at < row.created_at,
        and_(Prebooking.created_at == row.created_at, Prebooking.id < row.id),
    )
    # One statement for both counts (admission cost matters when hundreds arrive together).
    counts = select(func.count(), func.count().filter(earlier)).where(*twins)
    total, rank = session.execute(counts).one()
    last_fire = row.available_at + stagger * max(0, total - 1)
    return FireSlot(row.available_at + stagger * rank, last_fire + SETTLE_MARGIN)


def handle_delivery(raw_body: bytes, headers: Mapping[str, str], now: datetime) -> Reply:
    """Answer one verified QStash delivery (the signature was checked by the caller)."""
    try:
        body = DeliveryBody.model_validate_json(raw_body)
    except ValidationError as exc:
        # Signed by our QStash but unreadable: retrying cannot fix it.
        return _non_retryable(f"invalid delivery body: {describe(exc)[0]}")
    config = current_app.config
    message_id = headers.get("Upstash-Message-Id")
    retried = _as_int(headers.get("Upstash-Retried"))
    executor = get_executor()
    if config["QSTASH_SHADOW"]:
        seen = paths.arrive(
            executor,
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
    try:
        when, settle = _prepare(body.prebooking_id, config)
        attempt = paths.arrive(
            executor,
            paths.QSTASH,
            body.prebooking_id,
            arrived_at=now,
            fire_at=when,
            message_id=message_id,
            retried=retried,
            settle_at=settle,
        )
    except SQLAlchemyError as exc:  # nothing was booked without the database: QStash retries
        log.warning("delivery %s: database trouble: %s", message_id, type(exc).__name__)
        return Reply(503, {"error": "database unavailable; QStash will retry"})
    return reply_for(attempt)


def _prepare(
    prebooking_id: str, config: Mapping[str, Any]
) -> tuple[datetime | None, datetime | None]:
    """The fire and settle instants, and a warm pooled connection to the box meanwhile."""
    with get_db().session() as session:
        row = session.get(Prebooking, prebooking_id)
        if row is None or row.status not in sources(Event.CLAIM):
            return None, None
        stagger = timedelta(milliseconds=float(config["QSTASH_FIRE_STAGGER_MS"]))
        slot = fire_slot(session, row, stagger)
        box = str(row.booking_data.get("box", ""))
    executor = get_executor()
    # With the firing line, the booking is prepared over its own fresh connection, so a warm
    # pooled one would go unused: it would only cost ~2 ms of CPU per delivery and a request
    # to the box just before its burst. Without it, httpx books and the warm connection helps.
    warm_up = getattr(executor.client, "warm_up", None) if executor.line is None else None
    if warm_up is not None and box:
        warm_up(box)  # the booking request then pays no TCP/TLS handshake at fire time
    return slot.fire_at, slot.settle_at


def reply_for(attempt: Attempt) -> Reply:
    """Map what the arrival did to QStash's language: 2xx done, 5xx retry."""
    body = _describe(attempt)
    if attempt.action is Action.RELEASED:
        # Nothing final happened and the claim was given back: QStash retries; if the request
        # may have reached AimHarder, the next claimant asks AimHarder before booking again.
        return Reply(503, body | {"error": "transient failure; QStash will retry"})
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
