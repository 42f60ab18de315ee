import pytest

from flask_app.core.prebooking import (
    Event,
    IllegalTransition,
    PrebookingStatus,
    is_terminal,
    sources,
    transition,
)

P, L, C, F, X, S = (
    PrebookingStatus.PENDING,
    PrebookingStatus.LOADED,
    PrebookingStatus.COMPLETED,
    PrebookingStatus.FAILED,
    PrebookingStatus.CANCELLED,
    PrebookingStatus.SESSION_EXPIRED,
)


@pytest.mark.parametrize(
    ("start", "event", "end"),
    [
        (P, Event.CLAIM, L),
        (L, Event.RECLAIM, L),
        (L, Event.COMPLETE, C),
        (L, Event.FAIL, F),
        (L, Event.RELEASE, P),
        (P, Event.CANCEL, X),
        (P, Event.ABANDON, F),
        (P, Event.EXPIRE, S),
        (S, Event.REVIVE, P),
        (S, Event.CLAIM, L),
        (S, Event.CANCEL, X),
        (S, Event.ABANDON, F),
    ],
)
def test_allowed_moves(start, event, end):
    assert transition(start, event) is end


@pytest.mark.parametrize(
    ("start", "event"),
    [
        (X, Event.CLAIM),
        (C, Event.CLAIM),
        (F, Event.CLAIM),
        (L, Event.CLAIM),
        (L, Event.CANCEL),
        (C, Event.CANCEL),
        (P, Event.COMPLETE),
        (X, Event.COMPLETE),
        (L, Event.EXPIRE),
        (C, Event.EXPIRE),
        (P, Event.REVIVE),
        (S, Event.COMPLETE),
        ("bogus", Event.CLAIM),
    ],
)
def test_forbidden_moves_raise(start, event):
    with pytest.raises(IllegalTransition):
        transition(start, event)


def test_cancelled_prebooking_cannot_be_loaded():
    with pytest.raises(IllegalTransition, match="cannot claim a prebooking that is cancelled"):
        transition("cancelled", Event.CLAIM)


@pytest.mark.parametrize(
    ("status", "terminal"), [(P, False), (L, False), (C, True), (F, True), (X, True)]
)
def test_terminal_statuses(status, terminal):
    assert is_terminal(status) is terminal


def test_session_expired_is_not_terminal_and_claimable_like_pending():
    assert not is_terminal(S)
    assert sources(Event.CLAIM) == {P, S}
