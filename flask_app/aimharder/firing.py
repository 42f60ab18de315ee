"""The firing line: one thread per process writes every due booking request, in order.

Bookings opening at the same instant used to be fired by their own delivery threads, each
building and writing its request through httpx (~0.6 ms of CPU) while hundreds of others
fought for the GIL at the same millisecond. Instead, each delivery prepares its request ahead
(connection open, bytes serialised, see `aimharder.PreparedBooking`), submits it here with its
fire instant and waits; at the instant this line's single thread writes every due request
back-to-back (a raw `send` of a few hundred bytes costs ~10-20 µs), in `(fire_at, submission)`
order, then wakes the waiting threads, which read and classify their own answers. Within a
process FIFO is the write order; across processes it is each prebooking's rank offset.

Never early: a shot is written only once the clock reads at least its fire instant.

Two ways in: `fire()` submits one shot and blocks its caller until it was written; `submit()`
queues a batch without waiting and calls each shot's `on_done(written)` from the line's thread
right after the batch went out (the dispatcher: no thread waits per prebooking).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from flask_app.timing import Clock

__all__ = ["FiringLine", "OnDone", "Shot"]

#: Called once per submitted shot, from the line's thread: True written, False handed back
#: unwritten (its connection had dropped). Must be quick and must not raise.
OnDone = Callable[[bool], None]

log = logging.getLogger(__name__)

# A real-time line waits on a condition (interruptible by an earlier shot) until this close to
# the instant, then sleeps finely, and spins the last fraction of a millisecond.
_APPROACH_S = 0.004
_SPIN_S = 0.0003
# This long before the head's instant, the shots due within _CHECK_AHEAD_NS of it are checked
# for a dropped connection (20-40 µs each: 1,000 of them take tens of ms, so well ahead).
_CHECK_LEAD_S = 0.25
_CHECK_AHEAD_NS = 300_000_000


class Shot(Protocol):
    """A prepared request the line can check and write."""

    def is_open(self) -> bool:
        """The connection is still usable (the server has not closed it)."""
        ...

    def write(self) -> None:
        """Write the request now; never raises (failures are kept for the owner to read)."""
        ...


@dataclass(order=True)
class _Entry:
    at_ns: int
    seq: int
    at: datetime = field(compare=False)
    shot: Shot = field(compare=False)
    done: threading.Event = field(compare=False, default_factory=threading.Event)
    checked: bool = field(compare=False, default=False)
    written: bool = field(compare=False, default=False)
    on_done: OnDone | None = field(compare=False, default=None)

    def finish(self) -> None:
        """Wake the owner: the waiting thread, or the callback."""
        self.done.set()
        if self.on_done is not None:
            try:
                self.on_done(self.written)
            except Exception:  # a callback must never stop the line
                log.exception("firing line callback failed")


class FiringLine:
    """Writes submitted shots at their instants, in order, from one thread."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._realtime = bool(getattr(clock, "realtime", False))
        self._cond = threading.Condition()
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def fire(self, shot: Shot, at: datetime) -> bool:
        """Submit `shot` for `at` and wait; True once written, False if it was not written
        (its connection had dropped: nothing was sent, the caller should fall back)."""
        entry = _Entry(_ns(at), next(self._seq), at, shot)
        self._push([entry])
        entry.done.wait()
        return entry.written

    def submit(self, shots: Iterable[tuple[Shot, datetime, OnDone]]) -> None:
        """Queue shots without waiting; same-instant shots go out in the order given."""
        entries = [_Entry(_ns(at), next(self._seq), at, shot, on_done=cb) for shot, at, cb in shots]
        if entries:
            self._push(entries)

    def _push(self, entries: list[_Entry]) -> None:
        with self._cond:
            self._ensure_thread()
            for entry in entries:
                heapq.heappush(self._heap, entry)
            self._cond.notify()

    def _ensure_thread(self) -> None:
        # Started lazily and again after a fork (a gunicorn worker does not inherit threads).
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="firing-line", daemon=True)
        self._thread.start()

    def _now_ns(self) -> int:
        return time.time_ns() if self._realtime else _ns(self._clock.now())

    def _run(self) -> None:
        while True:
            try:
                self._fire_next()
            except Exception:  # the line must survive anything; its shots' owners are waiting
                log.exception("firing line iteration failed")

    def _fire_next(self) -> None:
        """Wait for the head's instant, then write every due shot back-to-back."""
        with self._cond:
            while not self._heap:
                self._cond.wait()
            head = self._heap[0]
            horizon = head.at_ns + _CHECK_AHEAD_NS
            unchecked = [e for e in self._heap if not e.checked and e.at_ns <= horizon]
            lead_s = _CHECK_LEAD_S if unchecked else _APPROACH_S
            remaining_s = (head.at_ns - self._now_ns()) / 1e9
            if self._realtime and remaining_s > lead_s:
                self._cond.wait(remaining_s - lead_s)
                return  # re-read the head: an earlier shot may have come in
        if unchecked:
            self._drop_closed(unchecked)
            return
        self._wait_until(head)
        self._write_due()

    def _drop_closed(self, entries: list[_Entry]) -> None:
        """Hand back, unwritten, the shots whose server closed the connection meanwhile."""
        closed = []
        for entry in entries:
            entry.checked = True
            if not entry.shot.is_open():
                closed.append(entry)
        if not closed:
            return
        with self._cond:
            self._heap = [e for e in self._heap if e not in closed]
            heapq.heapify(self._heap)
        for entry in closed:
            entry.finish()

    def _wait_until(self, head: _Entry) -> None:
        if not self._realtime:
            self._clock.sleep_until(head.at)
            return
        at_ns = head.at_ns
        while (left_s := (at_ns - time.time_ns()) / 1e9) > _SPIN_S:
            time.sleep(min(left_s - _SPIN_S, 0.0002) if left_s < 0.002 else left_s - 0.002)
        while time.time_ns() < at_ns:
            pass  # a few hundred µs at most: sleep() cannot wake this precisely

    def _write_due(self) -> None:
        """Write, in order, every shot whose instant has come; wake their owners afterwards."""
        fired: list[_Entry] = []
        started = wrote = self._now_ns()
        try:
            with self._cond:
                now = started
                while self._heap and self._heap[0].at_ns <= now:
                    entry = heapq.heappop(self._heap)
                    fired.append(entry)
                    entry.shot.write()
                    entry.written = True
                    if self._heap and self._heap[0].at_ns > now:
                        now = self._now_ns()
                wrote = self._now_ns()
        finally:
            # Woken only now, so their response parsing does not compete with the writes.
            for entry in fired:
                entry.finish()
        if len(fired) > 1:  # a burst: how late it began and how long its writes took
            log.info(
                "firing line: %d shots written from %.1f ms after the first one's instant,"
                " over %.1f ms (the last due %.1f ms after the first)",
                len(fired), (started - fired[0].at_ns) / 1e6, (wrote - started) / 1e6,
                (fired[-1].at_ns - fired[0].at_ns) / 1e6,
            )  # fmt: skip


def _ns(at: datetime) -> int:
    return int(round(at.timestamp() * 1e6)) * 1000
