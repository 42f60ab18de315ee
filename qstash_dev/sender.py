"""Concurrent HTTP delivery: an asyncio loop in its own thread with one shared httpx client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

DEFAULT_TIMEOUT_S = 900.0  # the free plan's maximum response time
MAX_RESPONSE_BYTES = 1_000_000


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
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
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
        limits = httpx.Limits(max_connections=2000, max_keepalive_connections=500)
        self._client = httpx.AsyncClient(limits=limits, trust_env=False, follow_redirects=False)
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def _spawn(self, attempts: list[Attempt]) -> None:
        """Create one task per attempt (runs in the loop)."""
        for attempt in attempts:
            task = self._loop.create_task(self._send(attempt))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, attempt: Attempt) -> None:
        """Make the request and report the outcome."""
        outcome = await self._request(attempt)
        self._on_outcome(attempt, outcome)

    async def _request(self, attempt: Attempt) -> Outcome:
        """One HTTP exchange; transport errors become an Outcome with status 0."""
        assert self._client is not None
        try:
            response = await self._client.request(
                attempt.method,
                attempt.url,
                content=attempt.body,
                headers=attempt.headers,
                timeout=httpx.Timeout(attempt.timeout_s, connect=min(attempt.timeout_s, 30.0)),
            )
        except httpx.TimeoutException:
            return Outcome(error="timeout")
        except httpx.HTTPError as exc:
            return Outcome(error=f"{type(exc).__name__}: {exc}")
        headers: dict[str, list[str]] = {}
        for name, value in response.headers.multi_items():
            headers.setdefault(_canonical(name), []).append(value)
        return Outcome(response.status_code, headers, response.content[:MAX_RESPONSE_BYTES])

    async def _shutdown(self) -> None:
        """Cancel tasks and close the client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()


def _canonical(name: str) -> str:
    """`content-type` -> `Content-Type` (Go's canonical header form)."""
    return "-".join(part.capitalize() for part in name.split("-"))
