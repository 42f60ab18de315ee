"""A timer: one thread, a heap keyed on monotonic due time, a Condition to wake it.

Items fire at their due time, never before: it sleeps on the Condition until shortly before the
earliest due time, then yields in a short loop for the last stretch. (The broker arms it a
little ahead of each delivery; the sender does the final, precise wait.)
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

SPIN_NS = 500_000  # the last 0.5 ms are waited by yielding, not by a timed wait
Payload = tuple[str, str, int]


def wall_ms() -> int:
    """Now as unix milliseconds."""
    return time.time_ns() // 1_000_000


class Timer:
    """Calls `on_due(payloads)` from its own thread once their wall-clock due times are reached."""

    def __init__(self, on_due: Callable[[list[Payload]], None]) -> None:
        """Create a stopped timer."""
        self._on_due = on_due
        self._heap: list[tuple[int, int, Payload]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the timer thread."""
        self._running = True
        self._thread = threading.Thread(target=self._run, name="qstash-dev-timer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; pending items are dropped."""
        with self._cond:
            self._running = False
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def at(self, due_ms: int, payload: Payload) -> None:
        """Fire `payload` at unix time `due_ms` (ms); past times fire at once."""
        due_ns = time.monotonic_ns() + (due_ms * 1_000_000 - time.time_ns())
        with self._cond:
            heapq.heappush(self._heap, (due_ns, next(self._seq), payload))
            if self._heap[0][2] is payload:
                self._cond.notify()

    def __len__(self) -> int:
        """Number of pending items."""
        with self._cond:
            return len(self._heap)

    def _run(self) -> None:
        """Main loop: wait, spin the last stretch, pop everything due, hand it over."""
        while True:
            target = self._wait_for_next()
            if target is None:
                return
            while time.monotonic_ns() < target:
                time.sleep(0)
            due = self._pop_due()
            if due:
                self._on_due(due)

    def _wait_for_next(self) -> int | None:
        """Block until the head item is within SPIN_NS; return its due time (None = stop)."""
        with self._cond:
            while self._running:
                if not self._heap:
                    self._cond.wait()
                    continue
                remaining = self._heap[0][0] - time.monotonic_ns()
                if remaining <= SPIN_NS:
                    return self._heap[0][0]
                self._cond.wait((remaining - SPIN_NS) / 1e9)
            return None

    def _pop_due(self) -> list[Payload]:
        """Remove and return every item whose time has come."""
        now = time.monotonic_ns()
        out: list[Payload] = []
        with self._cond:
            while self._heap and self._heap[0][0] <= now:
                out.append(heapq.heappop(self._heap)[2])
        return out
