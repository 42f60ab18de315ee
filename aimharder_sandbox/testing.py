"""Run the sandbox inside a test: `with run_sandbox() as sandbox: ...`.

```python
from aimharder_sandbox.testing import run_sandbox

with run_sandbox() as sandbox:                      # a free port on 127.0.0.1
    sandbox.add_class("101", "20261128", opens_at="2026-11-24T07:00:00+00:00", capacity=1)
    sandbox.add_session("cookie-a", credits=0)      # optional: any cookie works by default
    sandbox.set_fault("timeout", count=1, delay_ms=2000)
    sandbox.set_fault("error_500", rate=0.05, seed=1)  # ~5 % of bookings, reproducibly
    ...                                             # point AIMHARDER_BASE_URL at sandbox.url
    sandbox.arrivals()                              # [{"at_ns", "class_id", "day", "user", ...}]
    sandbox.bookings(); sandbox.connections(); sandbox.reset()
```

`Sandbox.state` is the live `SandboxState` for anything the helpers don't cover.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aimharder_sandbox.server import SandboxServer, make_server
from aimharder_sandbox.state import (
    DEFAULT_BOX,
    DEFAULT_CAPACITY,
    SandboxClass,
    SandboxState,
    parse_opens_at,
)


@dataclass
class Sandbox:
    """A running sandbox: its base URL and a handle on its state."""

    url: str
    state: SandboxState
    server: SandboxServer

    def add_class(
        self,
        class_id: str,
        day: str,
        *,
        opens_at: datetime | str | None = None,
        capacity: int = DEFAULT_CAPACITY,
        waitlist: int = 0,
        box: str = DEFAULT_BOX,
    ) -> None:
        """Define a class; booking before `opens_at` (aware) answers `-12` too early."""
        when = opens_at.isoformat() if isinstance(opens_at, datetime) else opens_at
        self.state.define_class(
            SandboxClass(class_id, day, box, parse_opens_at(when), capacity, waitlist)
        )

    def add_session(self, cookie: str, credits: int | None = None) -> None:
        """Register an `amhrdrauth` value; `credits` runs down per booking (None: unlimited)."""
        self.state.add_session(cookie, credits)

    def set_fault(
        self,
        mode: str,
        count: int | None = None,
        delay_ms: int | None = None,
        *,
        rate: float | None = None,
        seed: int | None = None,
    ) -> None:
        """`none`, `error_500`, `timeout`, `slow` or `garbage` for the next `count` bookings.

        `rate`: each booking gets the fault with this probability (seeded by `seed`) instead.
        """
        self.state.set_fault(mode, count, delay_ms, rate=rate, seed=seed)

    def arrivals(self) -> list[dict[str, Any]]:
        """Every `/api/book` seen, oldest first."""
        return self.state.arrivals()

    def bookings(self) -> list[dict[str, Any]]:
        """Every reservation held (booked or waitlisted)."""
        bookings: list[dict[str, Any]] = self.state.snapshot()["bookings"]
        return bookings

    def connections(self) -> int:
        """TCP connections accepted so far: keep-alive reuse keeps this low."""
        return self.state.connections()

    def reset(self) -> None:
        """Forget everything, as `POST /_sandbox/reset` does."""
        self.state.reset()


@contextmanager
def run_sandbox(
    port: int = 0, *, host: str = "127.0.0.1", accept_any_session: bool = True
) -> Iterator[Sandbox]:
    """Serve a fresh sandbox from a background thread for the duration of the block."""
    server = make_server(host, port, SandboxState(accept_any_session=accept_any_session))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="aimharder-sandbox"
    )
    thread.daemon = True
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    try:
        yield Sandbox(f"http://{bound_host!s}:{bound_port}", server.state, server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
