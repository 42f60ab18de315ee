"""Re-send rounds: a class's too-early members go out together, in rank order, once nothing of
the class is left in flight, or when a straggler kept the round waiting too long."""

import threading
from datetime import UTC, datetime, timedelta

from flask_app.core.resend_rounds import ResendRounds, Waiting

T0 = datetime(2026, 12, 1, 15, tzinfo=UTC)


class Fired:
    def __init__(self) -> None:
        self.rounds: list[tuple[str, list[str]]] = []
        self.event = threading.Event()

    def __call__(self, key: str, round_: list[Waiting[str]]) -> None:
        self.rounds.append((key, [w.item for w in round_]))
        self.event.set()


def waiting(rank: int) -> Waiting[str]:
    return Waiting(rank, f"id{rank}", T0, f"m{rank}")


def rounds(fired: Fired, wait_s: float = 60.0, timers: bool = True) -> ResendRounds[str]:
    return ResendRounds(fired, wait=lambda: timedelta(seconds=wait_s), timers=timers)


def test_a_round_waits_for_every_answer_in_flight_then_goes_in_rank_order():
    fired = Fired()
    r = rounds(fired)
    r.sending(["A"] * 4)
    r.too_early("A", waiting(2))
    r.too_early("A", waiting(0))
    assert fired.rounds == []  # two answers still in flight: one of them may be rank 1
    r.answered("A")  # rank 3 was accepted
    assert fired.rounds == []
    r.too_early("A", waiting(1))  # the straggler, read last
    assert fired.rounds == [("A", ["m0", "m1", "m2"])]
    assert r.pending() == 0


def test_classes_have_rounds_of_their_own():
    fired = Fired()
    r = rounds(fired)
    r.sending(["A", "B", "A"])
    r.too_early("A", waiting(1))
    r.too_early("B", waiting(0))
    assert fired.rounds == [("B", ["m0"])]
    r.too_early("A", waiting(0))
    assert fired.rounds == [("B", ["m0"]), ("A", ["m0", "m1"])]


def test_a_fired_round_counts_as_in_flight_for_the_next_one():
    fired = Fired()
    r = rounds(fired)
    r.sending(["A", "A"])
    r.too_early("A", waiting(0))
    r.too_early("A", waiting(1))  # round 1 goes out: both in flight again
    r.too_early("A", waiting(1))
    assert len(fired.rounds) == 1  # rank 0's second answer is still to come
    r.answered("A")  # rank 0 booked in round 1
    assert fired.rounds[1:] == [("A", ["m1"])]


def test_a_straggler_that_never_answers_holds_the_round_only_until_the_wait():
    fired = Fired()
    r = rounds(fired, wait_s=0.05)
    r.sending(["A", "A"])
    r.too_early("A", waiting(1))  # rank 0 never answers
    assert fired.event.wait(5), "the round never fired"
    assert fired.rounds == [("A", ["m1"])]
    r.too_early("A", waiting(0))  # its answer comes after all: the next round, once the
    assert len(fired.rounds) == 1  # re-sent rank 1 has answered too
    r.answered("A")
    assert fired.rounds[1:] == [("A", ["m0"])]


def test_a_timer_left_from_a_fired_round_does_not_fire_the_next_one():
    fired = Fired()
    waits = iter([0.05, 60.0])  # round 1's timer is short, round 2's long
    r = ResendRounds(fired, wait=lambda: timedelta(seconds=next(waits)))
    r.sending(["A", "A"])
    r.too_early("A", waiting(0))  # round 1 waits: its timer, 0.05 s
    r.too_early("A", waiting(1))  # round 1 fires now, by count
    fired.event.clear()
    r.too_early("A", waiting(0))  # round 2 waits for rank 1: its timer, 60 s
    assert not fired.event.wait(0.5)  # round 1's timer, had it survived, would have fired it
    assert len(fired.rounds) == 1
    r.answered("A")  # rank 1 booked: round 2 goes (and its timer is cancelled)
    assert fired.rounds[1:] == [("A", ["m0"])]


def test_without_timers_nothing_fires_until_the_class_has_answered():
    fired = Fired()
    r = rounds(fired, wait_s=0.0, timers=False)
    r.sending(["A", "A"])
    r.too_early("A", waiting(1))
    assert not fired.event.wait(0.05)
    assert r.pending() == 1
    r.answered("A")
    assert fired.rounds == [("A", ["m1"])]
