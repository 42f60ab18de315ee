"""Concurrent HTTP delivery: an asyncio loop in its own thread with one shared HTTP client."""

from __future__ import annotations

import asyncio
import functools
import gc
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from qstash_dev.http1 import Http1Client, Prepared, TransportError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 900.0  # the free plan's maximum response time
MAX_RESPONSE_BYTES = 1_000_000
SPIN_S = 0.002  # the last 2 ms before a due time are waited by yielding, not sleeping


@dataclass
class Attempt:
    """One HTTP request to make for a message."""

    message_id: str
    version: int
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    timeout_s: float
    flow_key: str | None = None
    due_ms: int = 0
    cancelled: bool = False


@dataclass
class Outcome:
    """What came back: a response (status > 0) or a transport error (status 0)."""

    status: int = 0
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None


class Sender:
    """Sends attempts concurrently and reports each outcome through `on_outcome`."""

    def __init__(self, on_outcome: Callable[[Attempt, Outcome], None]) -> None:
        """Create a stopped sender."""
        self._on_outcome = on_outcome
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._client = Http1Client()
        self._thread = threading.Thread(target=self._run, name="qstash-dev-sender", daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        """Start the loop thread and wait until the client exists."""
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        """Cancel in-flight requests, close the client and end the loop."""
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            future.result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def submit(self, attempts: list[Attempt]) -> None:
        """Start these attempts now (thread-safe, returns at once)."""
        if attempts:
            self._loop.call_soon_threadsafe(self._spawn, attempts)

    def _run(self) -> None:
        """Thread body: own the loop."""
        asyncio.set_event_loop(self._loop)
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def _spawn(self, attempts: list[Attempt]) -> None:
        """Start one task per group of attempts sharing a due time (runs in the loop)."""
        groups: dict[int, list[Attempt]] = defaultdict(list)
        for attempt in attempts:
            groups[attempt.due_ms].append(attempt)
        for due_ms, group in groups.items():
            self._track(self._send_group(due_ms, group))

    def _track(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run a coroutine as a task that is cancelled on shutdown."""
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _send_group(self, due_ms: int, group: list[Attempt]) -> None:
        """Connect ahead, wait for the due time precisely, write the ready requests at once.

        A destination that is slow to connect is sent to when its connection is ready, so it
        never holds back the rest of the group.
        """
        tasks = [self._track(self._prepare(a)) for a in group]
        lead_s = due_ms / 1000 - time.time() - SPIN_S
        await asyncio.wait(tasks, timeout=max(0.0, lead_s))
        await _sleep_until_near(due_ms)
        gc.disable()  # no await from here on: a full collection would delay the whole burst
        try:
            _spin_until(due_ms)
            for attempt, task in zip(group, tasks, strict=True):
                if task.done():
                    self._dispatch(attempt, task)
                else:
                    task.add_done_callback(functools.partial(self._dispatch, attempt))
        finally:
            gc.enable()

    def _dispatch(self, attempt: Attempt, task: asyncio.Task[Prepared | Outcome]) -> None:
        """Send a prepared request (or report why it cannot be sent)."""
        if task.cancelled():
            return
        ready = task.result()
        if isinstance(ready, Outcome):
            self._on_outcome(attempt, ready)
        elif attempt.cancelled:
            self._client.discard(ready)
            self._on_outcome(attempt, Outcome(error="cancelled"))
        else:
            self._client.send(ready)
            self._track(self._receive(attempt, ready))

    async def _prepare(self, attempt: Attempt) -> Prepared | Outcome:
        """A connection for the attempt, or the failure as an Outcome."""
        try:
            return await self._client.prepare(
                attempt.method, attempt.url, attempt.headers, attempt.body, attempt.timeout_s
            )
        except TransportError as exc:
            return Outcome(error=str(exc))

    async def _receive(self, attempt: Attempt, prepared: Prepared) -> None:
        """Read the response and report the outcome."""
        try:
            response = await self._client.receive(prepared, attempt.timeout_s)
        except TransportError as exc:
            self._on_outcome(attempt, Outcome(error=str(exc)))
            return
        headers: dict[str, list[str]] = {}
        for name, value in response.headers:
            headers.setdefault(_canonical(name), []).append(value)
        self._on_outcome(
            attempt, Outcome(response.status, headers, response.body[:MAX_RESPONSE_BYTES])
        )

    async def _shutdown(self) -> None:
        """Cancel tasks and close the client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()


async def _sleep_until_near(due_ms: int) -> None:
    """Sleep until SPIN_S before the wall-clock time `due_ms` (asyncio sleeps can overshoot)."""
    remaining = due_ms / 1000 - time.time()
    if remaining > SPIN_S:
        await asyncio.sleep(remaining - SPIN_S)


def _spin_until(due_ms: int) -> None:
    """Return at, never before, `due_ms` (wall clock)."""
    while time.time() * 1000 < due_ms:
        time.sleep(0)  # releases the GIL, so the API threads are not starved meanwhile


def _canonical(name: str) -> str:
    """`content-type` -> `Content-Type` (Go's canonical header form)."""
    return "-".join(part.capitalize() for part in name.split("-"))
