"""Validation of what callers send: pydantic models and one error formatter."""

from __future__ import annotations

import ipaddress
import re
from datetime import date, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from flask_app.core.prebooking import PrebookingStatus
from flask_app.core.window import DEFAULT_ZONE, Rule, is_known_zone

_BOX = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"  # an AimHarder box subdomain
_CLASS_ID = r"^[A-Za-z0-9_-]{1,64}$"
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL text refuses NUL)
_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")  # RFC 6265 token
_COOKIE_VALUE = re.compile(r"^[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{0,4096}$")


class Strict(BaseModel):
    """Unknown keys are errors, strings are not coerced from numbers."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class BookingData(Strict):
    """What AimHarder's /api/book needs, plus the box it is sent to."""

    box: Annotated[str, StringConstraints(pattern=_BOX)]
    # AimHarder's numeric box id: the `box` parameter of the class listing (reference §1.1).
    box_id: Annotated[str, StringConstraints(pattern=r"^\d{1,12}$")] | None = None
    class_id: Annotated[str, StringConstraints(pattern=_CLASS_ID)]
    day: Annotated[str, StringConstraints(pattern=r"^\d{8}$")]
    family_id: Annotated[str, StringConstraints(max_length=64, pattern=_PRINTABLE)] | None = None

    @field_validator("day")
    @classmethod
    def _real_date(cls, value: str) -> str:
        try:
            date(int(value[:4]), int(value[4:6]), int(value[6:]))
        except ValueError:
            raise ValueError("must be a real calendar date written YYYYMMDD") from None
        return value


def _notify_url(value: str) -> str:
    """https, or http to a loopback host (whether this deployment may use it: core/notify)."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an https URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (the payload is signed instead)")
    if parts.fragment:
        raise ValueError("must not have a fragment")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("must be https (plain http only to a loopback receiver, in development)")
    return value


NotifyUrl = Annotated[
    str,
    StringConstraints(max_length=2048, pattern=_PRINTABLE),
    AfterValidator(_notify_url),
]
_DAYS_AHEAD = 400  # as far ahead as an available_at may be (core/repository.MAX_AHEAD)


class PrebookingCreate(Strict):
    """Body of POST /api/prebookings: available_at, or the class start and the box's rule."""

    user_email: EmailStr = Field(max_length=320)
    available_at: AwareDatetime | None = None
    booking_data: BookingData
    class_start: AwareDatetime | None = None
    box_timezone: Annotated[str, StringConstraints(max_length=64)] = DEFAULT_ZONE
    opens_days_before: Annotated[int, Field(strict=True, ge=0, le=_DAYS_AHEAD)] | None = None
    opens_hours_before: Annotated[int, Field(strict=True, ge=0, le=_DAYS_AHEAD * 24)] | None = None
    notify_url: NotifyUrl | None = None

    @field_validator("user_email")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("box_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if not is_known_zone(value):
            raise ValueError(f"{value[:64]!r} is not an IANA time zone (e.g. Europe/Madrid)")
        return value

    @property
    def rule(self) -> Rule:
        """The box's window rule, as given."""
        return Rule(self.opens_days_before, self.opens_hours_before)


class ListQuery(Strict):
    """Query string of GET /api/prebookings."""

    status: PrebookingStatus | None = None
    user_email: Annotated[str, StringConstraints(max_length=320, pattern=_PRINTABLE)] | None = None
    limit: int = Field(default=100, ge=1, le=10_000)
    cursor: (
        Annotated[str, StringConstraints(max_length=200, pattern=r"^[A-Za-z0-9_-]*$")] | None
    ) = None


class SessionPut(Strict):
    """Body of PUT /api/sessions/<email>."""

    cookies: dict[str, str] = Field(min_length=1, max_length=50)
    # The default notify_url of the user's prebookings (None: keep the stored one).
    notify_url: NotifyUrl | None = None

    @field_validator("cookies")
    @classmethod
    def _cookie_syntax(cls, value: dict[str, str]) -> dict[str, str]:
        for name, val in value.items():
            if not _COOKIE_NAME.match(name):
                raise ValueError(f"cookie name {name[:40]!r} is not a valid cookie name")
            if not _COOKIE_VALUE.match(val):
                raise ValueError(f"cookie {name!r} has a value with characters cookies cannot hold")
        return value


class EmailOnly(Strict):
    """A path parameter that must be an email."""

    user_email: EmailStr = Field(max_length=320)


def is_loopback_host(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def describe(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    """One readable sentence naming every problem, plus the structured list."""
    details = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        details.append({"field": where, "problem": err["msg"]})
    sentence = "; ".join(f"{d['field']}: {d['problem']}" for d in details)
    return sentence, details


def parse_iso_aware(raw: str) -> datetime:
    """An ISO-8601 datetime that must carry an offset.

    Raises:
        ValueError: unparseable or naive.
    """
    value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("datetime must include a UTC offset")
    return value
