"""When and how a prebooking is handed to QStash (pure: takes `now`, does no I/O)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from flask_app.core.prebooking import Event, sources
from flask_app.qstash.gateway import Message

EXECUTE_PATH = "/api/qstash/prebooking-execute"


class Skip(StrEnum):
    """Why a prebooking gets no QStash message (now)."""

    NOT_IN_ROLLOUT = "not_in_rollout"  # the user's hash is outside QSTASH_ROLLOUT_PERCENT
    DUE = "due"  # opens within the given min_notice: left to a polling path (cron)
    BEYOND_MAX_DELAY = "beyond_max_delay"  # too far ahead for QStash: published later (relay)
    NOT_PENDING = "not_pending"
    ALREADY_PUBLISHED = "already_published"


@dataclass(frozen=True)
class PublishPolicy:
    """How messages are shaped; built from the app config."""

    app_base_url: str
    lead: timedelta = timedelta(seconds=3)  # QStash fires in whole seconds, within ~1 s
    max_delay: timedelta = timedelta(days=7)  # QStash free plan maximum
    retries: int = 3
    # QStash's default backoff is minutes: useless inside a booking window. Milliseconds.
    retry_delay: str = "200 * (1 + retried)"
    timeout_s: int = 30  # for the delivery's answer, on top of any crowd spread (lead_for)
    # A crowd of prebookings opening at one instant: each earlier-created twin adds this much
    # lead, so their deliveries reach the app spread out instead of in the same second (the
    # app admits a delivery in a few ms of CPU; bench/README.md), up to max_lead in all.
    crowd_lead: timedelta = timedelta(milliseconds=10)
    max_lead: timedelta = timedelta(seconds=60)

    @property
    def destination(self) -> str:
        return self.app_base_url.rstrip("/") + EXECUTE_PATH

    def lead_for(self, crowd_rank: int) -> timedelta:
        """How long before the opening the message of the twin ranked `crowd_rank` is due.

        Rank 0 (the first created) gets `lead`; later twins are due earlier, so a crowd of
        deliveries arrives spread over `crowd_lead × size` and every one is admitted (verified,
        claimed, prepared) before the instant, then all fire in creation order.
        """
        room = max(timedelta(0), self.max_lead - self.lead)
        return self.lead + min(self.crowd_lead * max(0, crowd_rank), room)


def is_in_rollout(email: str, percent: int) -> bool:
    """Stable per-user bucketing: the same email always lands in the same bucket 0..99."""
    if percent >= 100:
        return True
    digest = hashlib.sha256(email.strip().lower().encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < percent


def deduplication_id(prebooking_id: str, generation: int) -> str:
    """The prebooking id; suffixed after a rollback so a re-publish is not deduplicated away."""
    return prebooking_id if generation == 0 else f"{prebooking_id}-g{generation}"


def plan_publish(
    *,
    prebooking_id: str,
    user_email: str,
    available_at: datetime,
    generation: int,
    now: datetime,
    policy: PublishPolicy,
    min_notice: timedelta = timedelta(0),
    crowd_rank: int = 0,
) -> Message | Skip:
    """The message for one prebooking, or why there is none now.

    The message is due `policy.lead_for(crowd_rank)` before the window opens (`crowd_rank`:
    how many prebookings opening at the same instant were created before this one); the
    webhook then waits with a precise timer. A window already open, or opening within the
    lead, gets a message due at once (no delay). `min_notice` (backfill, while cron runs):
    windows opening sooner than this are left to cron.
    """
    if min_notice > timedelta(0) and available_at - now < min_notice:
        return Skip.DUE
    lead = policy.lead_for(crowd_rank)
    deliver_at = available_at - lead
    if available_at - policy.lead - now > policy.max_delay:
        return Skip.BEYOND_MAX_DELAY
    not_before = math.floor(deliver_at.timestamp())
    return Message(
        url=policy.destination,
        body={
            "prebookingId": prebooking_id,
            "userEmail": user_email,
            "scheduledAt": available_at.isoformat(),
        },
        not_before=not_before if deliver_at > now else None,
        deduplication_id=deduplication_id(prebooking_id, generation),
        retries=policy.retries,
        retry_delay=policy.retry_delay,
        # The delivery waits for the opening inside the request: the spread adds to its time.
        timeout_s=policy.timeout_s + math.ceil((lead - policy.lead).total_seconds()),
        label="prebooking",
    )


class Publishable(Protocol):
    """What planning needs of a prebooking (an ORM row or a lighter snapshot)."""

    @property
    def id(self) -> str: ...
    @property
    def user_email(self) -> str: ...
    @property
    def available_at(self) -> datetime: ...
    @property
    def status(self) -> str: ...
    @property
    def qstash_message_id(self) -> str | None: ...
    @property
    def qstash_generation(self) -> int: ...


def plan_row(
    row: Publishable,
    *,
    now: datetime,
    policy: PublishPolicy,
    rollout_percent: int,
    min_notice: timedelta = timedelta(0),
    crowd_rank: int = 0,
) -> Message | Skip:
    """One prebooking's message, or why it gets none: the rule create, relay and backfill share."""
    if row.status not in sources(Event.CLAIM):  # pending, or session_expired (still tried)
        return Skip.NOT_PENDING
    if row.qstash_message_id:
        return Skip.ALREADY_PUBLISHED
    if not is_in_rollout(row.user_email, rollout_percent):
        return Skip.NOT_IN_ROLLOUT
    return plan_publish(
        prebooking_id=row.id,
        user_email=row.user_email,
        available_at=row.available_at,
        generation=row.qstash_generation,
        now=now,
        policy=policy,
        min_notice=min_notice,
        crowd_rank=crowd_rank,
    )
