"""Outcomes reach the user: a signed JSON event to their notify_url, delivered by QStash.

One place emits every event: the receivers below, connected to the core's signals
(`attempt_finished` for booked / waitlisted / failed, `sessions_expired` for the pre-flight).
The URL is the prebooking's `notify_url`, else the user's default (PUT /api/sessions/<email>).
QStash delivers it (retries, then the DLQ), forwarding our signature header; the receiver checks
it with NOTIFY_SIGNING_SECRET alone (docs/notifications.md), as Stripe's webhooks are checked:

    X-Prebooking-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>

Events go through the transactional QStash outbox (flask_app/qstash/outbox.py, action `notify`):
the pre-flight's `session_expired` entries are written in the same transaction as the expiry;
the outcome's entry right after the execution core committed it (a crash in between loses the
event, never the booking). The background runner sends them within a second and retries a
QStash outage with backoff; the message is built, and signed, when it is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app
from sqlalchemy.orm import Session

from flask_app.api.schemas import is_loopback_host
from flask_app.core import events
from flask_app.core.execution import Action, Attempt, get_executor
from flask_app.core.prebooking import PrebookingStatus
from flask_app.db import get_db
from flask_app.models import Prebooking, UserSession
from flask_app.qstash import outbox
from flask_app.qstash.gateway import Message

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Prebooking-Signature"
#: A receiver should refuse signatures older than this (QStash's last retry comes ~5 min later).
TOLERANCE_S = 600
#: QStash retries a failed delivery 5 times, 10 s, 20 s, 40 s, 80 s and 160 s apart.
RETRIES = 5
RETRY_DELAY = "10000 * pow(2, retried)"
_FINISHED = frozenset({Action.EXECUTED, Action.CONFIRMED, Action.FAILED})


class EventType(StrEnum):
    """What an event announces."""

    BOOKED = "prebooking.booked"
    WAITLISTED = "prebooking.waitlisted"
    FAILED = "prebooking.failed"
    SESSION_EXPIRED = "prebooking.session_expired"


class NotifyUnavailable(Exception):
    """This deployment cannot send events (NOTIFY_SIGNING_SECRET is not set)."""


class BadNotifyUrl(ValueError):
    """A notify_url this deployment's QStash could not deliver to."""


# --- signing (pure) -------------------------------------------------------------------------


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header's value for a raw body sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str, now: int, tolerance_s: int = TOLERANCE_S) -> bool:
    """What a receiver does: the header is ours for exactly this body, and recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    fresh = abs(now - timestamp) <= tolerance_s
    return fresh and hmac.compare_digest(expected, fields.get("v1", ""))


def encode(payload: Mapping[str, Any]) -> bytes:
    """The body bytes QStash delivers: the gateway serialises message bodies with json.dumps."""
    return json.dumps(payload).encode()


# --- events (pure) --------------------------------------------------------------------------


def event_type(row: Prebooking) -> EventType | None:
    """The event a prebooking's status calls for; None when it calls for none."""
    if row.status == PrebookingStatus.SESSION_EXPIRED:
        return EventType.SESSION_EXPIRED
    if row.status == PrebookingStatus.FAILED:
        return EventType.FAILED
    if row.status == PrebookingStatus.COMPLETED:
        waitlisted = (row.result or {}).get("outcome") == "waitlisted"
        return EventType.WAITLISTED if waitlisted else EventType.BOOKED
    return None


def event_id(row: Prebooking, kind: EventType) -> str:
    """Stable per prebooking and event (a session can expire again after a revival)."""
    suffix = ""
    if kind is EventType.SESSION_EXPIRED and row.session_checked_at is not None:
        suffix = f"-{int(row.session_checked_at.timestamp())}"
    return f"evt-{row.id}-{kind.value.split('.')[1]}{suffix}"


def payload(row: Prebooking, kind: EventType, now: datetime) -> dict[str, Any]:
    """The event's JSON (docs/notifications.md)."""
    result = row.result or {}
    return {
        "id": event_id(row, kind),
        "type": kind.value,
        "created": int(now.timestamp()),
        "data": {
            "prebooking": {
                "id": row.id,
                "user_email": row.user_email,
                "status": row.status,
                "booking_data": row.booking_data,
                "available_at": row.available_at.isoformat(),
                "class_start": row.class_start.isoformat() if row.class_start else None,
                "box_timezone": row.box_timezone,
                "executed_at": row.executed_at.isoformat() if row.executed_at else None,
            },
            "outcome": result.get("outcome"),
            "reason": row.error_message,
        },
    }


def message(row: Prebooking, url: str, secret: str, now: datetime) -> Message | None:
    """The QStash message announcing the row's status to `url`; None if it calls for none."""
    kind = event_type(row)
    if kind is None:
        return None
    body = payload(row, kind, now)
    return Message(
        url=url,
        body=body,
        deduplication_id=body["id"],
        retries=RETRIES,
        retry_delay=RETRY_DELAY,
        timeout_s=10,
        # QStash forwards it to the receiver (as Upstash-Forward-X-Prebooking-Signature).
        headers={SIGNATURE_HEADER: sign(secret, encode(body), int(now.timestamp()))},
        label="notify",
    )


# --- configuration --------------------------------------------------------------------------


def check_url(url: str | None, config: Mapping[str, Any]) -> None:
    """Refuse a notify_url this deployment cannot serve (schemas checked its syntax).

    Raises:
        NotifyUnavailable: no NOTIFY_SIGNING_SECRET.
        BadNotifyUrl: plain http while QStash is not the local one (only it reaches loopback).
    """
    if url is None:
        return
    if not config.get("NOTIFY_SIGNING_SECRET"):
        raise NotifyUnavailable("notifications are not configured (NOTIFY_SIGNING_SECRET)")
    local_qstash = is_loopback_host(urlsplit(str(config["QSTASH_URL"])).hostname or "")
    if urlsplit(url).scheme == "http" and not local_qstash:
        raise BadNotifyUrl("must be https (plain http only to a loopback receiver, in development)")


# --- sending (through the QStash outbox) ----------------------------------------------------


def target(session: Session, row: Prebooking) -> str | None:
    """The prebooking's notify_url, else its user's default."""
    if row.notify_url:
        return row.notify_url
    user = session.get(UserSession, row.user_email)
    return user.notify_url if user is not None else None


def build(session: Session, row: Prebooking, now: datetime) -> Message | None:
    """The outbox's NOTIFY_BUILDER: the event the row's status calls for NOW (an entry owed
    for a session_expired that was revived meanwhile sends nothing), signed at sending time."""
    secret = current_app.config.get("NOTIFY_SIGNING_SECRET")
    url = target(session, row) if secret else None
    return message(row, url, secret, now) if url and secret else None


def owe(session: Session, prebooking_ids: list[str], now: datetime) -> int:
    """Write a `notify` outbox entry for each prebooking that has somewhere to announce to;
    the caller commits (with the change, where it can). Returns how many."""
    owed = 0
    for prebooking_id in prebooking_ids:
        row = session.get(Prebooking, prebooking_id)
        if row is not None and target(session, row) is not None:
            outbox.enqueue(session, row, outbox.OutboxAction.NOTIFY, now)
            owed += 1
    return owed


def on_attempt_finished(sender: str, *, attempt: Attempt, app: Any = None, **_: Any) -> None:
    """Owe the event of what a won arrival ended in (booked, waitlisted, failed).

    The execution core has committed the outcome already, so the entry is a second, small
    transaction; the background runner sends it within a second. Never raises.
    """
    if app is None or not app.config.get("NOTIFY_SIGNING_SECRET"):
        return  # no secret: no notify_url was accepted, nothing to read
    if not attempt.won or attempt.action not in _FINISHED:
        return
    if attempt.status not in (PrebookingStatus.COMPLETED, PrebookingStatus.FAILED):
        return
    try:
        with get_db(app).session() as session:
            owe(session, [attempt.prebooking_id], get_executor(app).clock.now())
            session.commit()
    except Exception:  # announcing is best effort; the prebooking's own state is what counts
        log.exception("notify %s: could not owe the event", attempt.prebooking_id)


def on_sessions_expired(
    sender: Flask, *, prebooking_ids: list[str], session: Session, now: datetime, **_: Any
) -> None:
    """Owe the users' events inside the pre-flight's transaction (committed with the expiry)."""
    if sender.config.get("NOTIFY_SIGNING_SECRET"):
        owe(session, prebooking_ids, now)


def init_app(app: Flask) -> None:
    """Plug the message builder into the outbox and connect the receivers (module-level
    functions: blinker holds receivers weakly)."""
    app.extensions[outbox.NOTIFY_BUILDER] = build
    events.attempt_finished.connect(on_attempt_finished)
    events.sessions_expired.connect(on_sessions_expired)
