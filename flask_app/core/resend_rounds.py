"""Re-send rounds: after too-early answers, a class's members go out again together, in rank
order, once the class has nothing left in flight.

AimHarder answers `bookState -12` to a whole class at once when its clock is behind ours. If
each member were sent again at its own answer's time plus a gap, answers read in a different
order (or a reader thread that stalls for a moment on a loaded machine: CI saw a 1 s stall)
would reorder the class, and the first to prebook would no longer be the first the gym accepts.
So a class's too-early members wait here until every member of the class still in flight has
answered, then the whole round is handed back to the dispatcher at once, which sends it at one
instant plus rank × stagger. A round never waits more than `wait` for a straggler (an answer
that never comes, a send that never started): a timer fires it anyway.

Counting is the dispatcher's: `sending` for every member it hands to the firing line (first
sends and whole rounds), `answered` for an answer it records (or re-sends at once, e.g. a
transient one, which stays in flight and so calls neither), `too_early` for one that joins the
round.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Waiting(Generic[T]):
    """A member told too early, waiting for its class's round."""

    rank: int
    id: str
    earliest: datetime  # not before this (its answer + the re-send gap)
    item: T


@dataclass
class _Class(Generic[T]):
    in_flight: int = 0
    waiting: list[Waiting[T]] = field(default_factory=list)
    fired: int = 0  # rounds fired so far (a timer only fires the round it was started for)
    timer: threading.Timer | None = None


class ResendRounds(Generic[T]):
    """Per class: members in flight, and the too-early ones waiting for them."""

    def __init__(
        self,
        fire: Callable[[str, list[Waiting[T]]], None],
        *,
        wait: Callable[[], timedelta],
        timers: bool = True,
    ) -> None:
        self._fire = fire  # called outside the lock, the round sorted by (rank, id)
        self._wait = wait  # read when a round starts waiting (settings may change)
        self._timers = timers  # False: everything answers inline (test clocks), no straggler
        self._lock = threading.Lock()
        self._classes: dict[str, _Class[T]] = {}

    def sending(self, keys: Iterable[str]) -> None:
        """These members (one class key each) are about to be sent."""
        with self._lock:
            for key in keys:
                self._classes.setdefault(key, _Class()).in_flight += 1

    def answered(self, key: str) -> None:
        """A member of `key` answered and is not sent again in a round."""
        with self._lock:
            round_ = self._landed(key)
        self._fire_now(key, round_)

    def too_early(self, key: str, waiting: Waiting[T]) -> None:
        """A member of `key` was told too early: it goes out with the class's next round."""
        with self._lock:
            self._classes.setdefault(key, _Class()).waiting.append(waiting)
            round_ = self._landed(key)
            if round_ is None:
                self._start_timer(key)
        self._fire_now(key, round_)

    def pending(self) -> int:
        """Members waiting for a round, over every class."""
        with self._lock:
            return sum(len(c.waiting) for c in self._classes.values())

    def _landed(self, key: str) -> list[Waiting[T]] | None:
        """One answer fewer in flight; the round to fire if none is left (the lock is held)."""
        state = self._classes.get(key)
        if state is None:
            return None
        state.in_flight = max(0, state.in_flight - 1)
        if state.in_flight:
            return None
        return self._take(key, state)

    def _take(self, key: str, state: _Class[T]) -> list[Waiting[T]] | None:
        """Take the class's waiting round: counted in flight again (the lock is held)."""
        round_, state.waiting = state.waiting, []
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        if not round_:
            if not state.in_flight:
                del self._classes[key]
            return None
        state.fired += 1
        state.in_flight += len(round_)
        return sorted(round_, key=lambda w: (w.rank, w.id))

    def _start_timer(self, key: str) -> None:
        state = self._classes[key]
        if not self._timers or state.timer is not None:
            return
        timer = threading.Timer(self._wait().total_seconds(), self._on_timer, (key, state.fired))
        timer.daemon = True
        timer.name = "resend-round"
        state.timer = timer
        timer.start()

    def _on_timer(self, key: str, fired: int) -> None:
        """A straggler kept the round waiting `wait`: fire what waits (once per round)."""
        with self._lock:
            state = self._classes.get(key)
            if state is None or state.fired != fired:
                return
            state.timer = None
            round_ = self._take(key, state)
        self._fire_now(key, round_)

    def _fire_now(self, key: str, round_: list[Waiting[T]] | None) -> None:
        if round_:
            self._fire(key, round_)
