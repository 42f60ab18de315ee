"""The prebooking state machine: statuses, the moves allowed between them, and transition()."""

from __future__ import annotations

from enum import StrEnum


class PrebookingStatus(StrEnum):
    """Where a prebooking is in its life."""

    PENDING = "pending"  # waiting for its window; either path may claim it
    LOADED = "loaded"  # claimed by one path, booking in progress (lease-bounded)
    COMPLETED = "completed"  # booked (or waitlisted, or already booked by the user)
    FAILED = "failed"  # AimHarder refused, or it could not be executed
    CANCELLED = "cancelled"  # the user withdrew it before it ran
    # The stored AimHarder session failed its pre-flight check. Still bookable: a new session
    # (PUT /api/sessions/<email>) revives it to pending, and at the instant we still try.
    SESSION_EXPIRED = "session_expired"


class Event(StrEnum):
    """What can happen to a prebooking."""

    CLAIM = "claim"  # a path takes it for execution
    RECLAIM = "reclaim"  # a path takes over a claim whose lease ran out (crashed owner)
    COMPLETE = "complete"
    FAIL = "fail"
    RELEASE = "release"  # the owner gives it back untouched (nothing was sent to AimHarder)
    CANCEL = "cancel"
    ABANDON = "abandon"  # given up without execution (e.g. its QStash message died in the DLQ)
    EXPIRE = "expire"  # the pre-flight check found the stored session dead
    REVIVE = "revive"  # the user stored a new session


class IllegalTransition(Exception):
    """The event is not allowed from the prebooking's current status."""

    def __init__(self, status: str, event: str) -> None:
        super().__init__(f"cannot {event} a prebooking that is {status}")
        self.status = status
        self.event = event


P, L, C, F, X, S = (
    PrebookingStatus.PENDING,
    PrebookingStatus.LOADED,
    PrebookingStatus.COMPLETED,
    PrebookingStatus.FAILED,
    PrebookingStatus.CANCELLED,
    PrebookingStatus.SESSION_EXPIRED,
)

TRANSITIONS: dict[tuple[PrebookingStatus, Event], PrebookingStatus] = {
    (P, Event.CLAIM): L,
    (L, Event.RECLAIM): L,
    (L, Event.COMPLETE): C,
    (L, Event.FAIL): F,
    (L, Event.RELEASE): P,
    (P, Event.CANCEL): X,
    (P, Event.ABANDON): F,
    (P, Event.EXPIRE): S,
    (S, Event.REVIVE): P,
    (S, Event.CLAIM): L,  # at the instant we still try: the user may have logged in again
    (S, Event.CANCEL): X,
    (S, Event.ABANDON): F,
}

TERMINAL = frozenset({C, F, X})


def transition(status: str, event: Event) -> PrebookingStatus:
    """The status after `event` happens to a prebooking in `status`.

    Raises:
        IllegalTransition: the move is not in TRANSITIONS.
    """
    try:
        return TRANSITIONS[(PrebookingStatus(status), event)]
    except (KeyError, ValueError):
        raise IllegalTransition(status, event.value) from None


def sources(event: Event) -> frozenset[PrebookingStatus]:
    """The statuses from which `event` is allowed (used to build conditional UPDATEs)."""
    return frozenset(start for (start, ev) in TRANSITIONS if ev is event)


def is_terminal(status: str) -> bool:
    """True once nothing more can happen to the prebooking."""
    return status in TERMINAL
