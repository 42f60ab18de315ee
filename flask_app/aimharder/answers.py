"""Waiting for many booking answers without a thread each: one selector thread and a small pool.

After the firing line wrote a batch, every request's answer is awaited here. One thread
watches all their connections with a selector; once a connection has bytes to read (or its
deadline passed), a small pool reads and classifies the answer (`PreparedBooking.result`) and
hands it to the owner's callback. Hundreds of answers in flight cost one thread plus the pool,
and a slow AimHarder delays no other answer's processing.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from flask_app.aimharder.client import BookingResult, PreparedBooking

__all__ = ["AnswerReader", "OnAnswer"]

log = logging.getLogger(__name__)

#: Gets the classified answer (None: nothing had been sent). Runs on a pool thread.
OnAnswer = Callable[[BookingResult | None], None]


@dataclass(order=True)
class _Watch:
    deadline: float
    seq: int
    prepared: PreparedBooking = field(compare=False)
    on_answer: OnAnswer = field(compare=False)
    keep_open: bool = field(compare=False, default=False)
    done: bool = field(compare=False, default=False)


class AnswerReader:
    """Reads the answers of written requests as they arrive (thread and pool start lazily)."""

    def __init__(self, *, timeout_s: float, threads: int = 8) -> None:
        self._timeout_s = timeout_s
        self._threads = threads
        self._lock = threading.Lock()
        self._incoming: list[_Watch] = []
        self._seq = itertools.count()
        self._pid = 0
        self._wake_w: socket.socket | None = None
        self._pool: ThreadPoolExecutor | None = None

    def watch(
        self, prepared: PreparedBooking, on_answer: OnAnswer, keep_open: bool = False
    ) -> None:
        """Read `prepared`'s answer once it arrives (or times out) and pass it to `on_answer`."""
        deadline = time.monotonic() + self._timeout_s
        entry = _Watch(deadline, next(self._seq), prepared, on_answer, keep_open)
        with self._lock:
            self._ensure_started()
            self._incoming.append(entry)
            wake = self._wake_w
        if wake is not None:
            try:
                wake.send(b"\0")
            except OSError:  # the pipe is full: the thread is awake anyway
                pass

    def _ensure_started(self) -> None:
        # Per process: a forked child inherits neither the thread nor the pool's threads.
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self._wake_w = wake_w
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="answers")
        thread = threading.Thread(target=self._run, args=(wake_r,), name="answers", daemon=True)
        thread.start()

    def _run(self, wake_r: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(wake_r, selectors.EVENT_READ, None)
        deadlines: list[_Watch] = []
        while True:
            try:
                self._turn(selector, wake_r, deadlines)
            except Exception:  # the reader must survive anything: owners wait for answers
                log.exception("answer reader iteration failed")

    def _turn(
        self, selector: selectors.BaseSelector, wake_r: socket.socket, deadlines: list[_Watch]
    ) -> None:
        timeout = max(0.0, deadlines[0].deadline - time.monotonic()) if deadlines else None
        for key, _ in selector.select(timeout):
            if key.data is None:
                _drain(wake_r)
                continue
            selector.unregister(key.fileobj)
            self._read(key.data)
        self._register_incoming(selector, deadlines)
        now = time.monotonic()
        while deadlines and (deadlines[0].done or deadlines[0].deadline <= now):
            entry = heapq.heappop(deadlines)
            if not entry.done:
                _forget(selector, entry)
                entry.prepared.expire()
                self._read(entry)

    def _register_incoming(self, selector: selectors.BaseSelector, deadlines: list[_Watch]) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, []
        for entry in incoming:
            try:
                selector.register(entry.prepared.fileno(), selectors.EVENT_READ, entry)
            except (OSError, ValueError):  # already closed: read it now (it reports the error)
                self._read(entry)
                continue
            heapq.heappush(deadlines, entry)

    def _read(self, entry: _Watch) -> None:
        entry.done = True
        assert self._pool is not None
        self._pool.submit(_deliver, entry)


def _deliver(entry: _Watch) -> None:
    try:
        result = entry.prepared.result(keep_open=entry.keep_open)
    except Exception:  # classification never raises; a bug here must not lose the booking
        log.exception("reading a booking answer failed")
        result = None
    try:
        entry.on_answer(result)
    except Exception:
        log.exception("booking answer callback failed")


def _forget(selector: selectors.BaseSelector, entry: _Watch) -> None:
    try:
        selector.unregister(entry.prepared.fileno())
    except (KeyError, OSError, ValueError):
        pass


def _drain(wake_r: socket.socket) -> None:
    try:
        while wake_r.recv(4096):
            pass
    except OSError:  # BlockingIOError: nothing left
        pass
