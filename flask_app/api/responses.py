"""What the API answers, as pydantic models: the source of /api/openapi.json's response schemas.

The views build their JSON directly; tests validate real responses against the document
generated from these models, so a drift between the two fails the suite.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from flask_app.api.schemas import BookingData
from flask_app.core.prebooking import PrebookingStatus


class Answer(BaseModel):
    """Fields may be added over time; clients must ignore those they do not know."""

    model_config = ConfigDict(extra="allow")


class ErrorBody(Answer):
    """Every 4xx and 5xx: what is wrong, in words (`details` lists invalid fields)."""

    error: str
    details: list[dict[str, Any]] | None = None


class PrebookingOut(Answer):
    """A prebooking as the API shows it."""

    id: str
    status: PrebookingStatus
    user_email: str
    booking_data: BookingData
    available_at: AwareDatetime
    qstash_message_id: str | None
    created_at: AwareDatetime
    executed_by: str | None
    executed_at: AwareDatetime | None
    result: dict[str, Any] | None
    error_message: str | None


class PrebookingPage(Answer):
    """A page of prebookings in creation order; pass next_cursor back for the next one."""

    items: list[PrebookingOut]
    next_cursor: str | None


class SessionStored(Answer):
    """The stored session's cookie names (never their values)."""

    user_email: str
    cookie_names: list[str]
    updated_at: AwareDatetime


class Health(Answer):
    """Liveness, the database, the flags in force and which secrets are set (never values)."""

    status: Literal["ok", "degraded"]
    database: str
    flags: dict[str, bool | int]
    configured: dict[str, bool]
    paths: dict[str, Any]
    qstash_url: str
    app_base_url: str
    error: str | None = None


class CheckResult(Answer):
    """One readiness condition."""

    ok: bool
    detail: str


class Ready(Answer):
    """Readiness: every check holds (200), or the failing ones are named (503)."""

    status: Literal["ready", "not ready"]
    checks: dict[str, CheckResult]
    error: str | None = None


class ParityReport(Answer):
    """The parity report (docs/parity.md describes every field)."""


class DeliveryAnswer(Answer):
    """What the webhook tells QStash (2xx: done; 5xx: retry; 489: do not retry)."""
