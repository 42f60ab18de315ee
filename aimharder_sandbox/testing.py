"""Run the sandbox inside a test: `with run_sandbox() as sandbox: ...`.

```python
from aimharder_sandbox.testing import run_sandbox

with run_sandbox(clock_offset_ms=-20, clock_jitter_ms=2) as sandbox:  # gym clock 20 ms behind
    sandbox.add_class("101", "20261128", opens_at="2026-11-24T07:00:00+00:00", capacity=1)
    sandbox.add_scheduled_class("102", start="2026-11-28T08:00:00+01:00", opens_days_before=4)
    sandbox.box_id()                                # the `box` its listing requires
    sandbox.host_ns(opening)                        # the gym's opening on our clock (ns)
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

from aimharder_sandbox.clock import as_ns, settings_from_ms
from aimharder_sandbox.server import SandboxServer, make_server
from aimharder_sandbox.state import (
    DEFAULT_BOX,
    DEFAULT_CAPACITY,
    DEFAULT_ZONE,
    SandboxClass,
    SandboxState,
    parse_opens_at,
    scheduled_class,
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

    def add_scheduled_class(
        self,
        class_id: str,
        *,
        start: datetime | str,
        timezone: str = DEFAULT_ZONE,
        opens_days_before: int | None = None,
        opens_hours_before: int | None = None,
        capacity: int = DEFAULT_CAPACITY,
        waitlist: int = 0,
        box: str = DEFAULT_BOX,
    ) -> SandboxClass:
        """Define a class by its start and the box's rule (N days and/or H hours before)."""
        cls = scheduled_class(
            class_id,
            start=start.isoformat() if isinstance(start, datetime) else start,
            zone=timezone,
            opens_days_before=opens_days_before,
            opens_hours_before=opens_hours_before,
            capacity=capacity,
            waitlist=waitlist,
            box=box,
        )
        self.state.define_class(cls)
        return cls

    def set_clock(
        self, offset_ms: float = 0.0, jitter_ms: float = 0.0, seed: int | None = None
    ) -> None:
        """The gym's clock runs `offset_ms` ahead of ours (negative: behind), ± `jitter_ms`."""
        self.state.set_clock(settings_from_ms(offset_ms, jitter_ms, seed))

    def set_box_id(self, box_id: str, box: str = DEFAULT_BOX) -> None:
        """The numeric id the box's listing requires as its `box` parameter."""
        self.state.set_box_id(box, box_id)

    def box_id(self, box: str = DEFAULT_BOX) -> str:
        """The numeric id of a box (configured, or derived from its name)."""
        return self.state.box_id(box)

    def host_ns(self, gym_instant: datetime) -> int:
        """When OUR clock reads the instant at which the gym's clock reads `gym_instant`
        (jitter aside), in epoch ns: compare arrivals' `at_ns` against it."""
        return self.state.clock.host_ns(as_ns(gym_instant))

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
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    accept_any_session: bool = True,
    clock_offset_ms: float = 0.0,
    clock_jitter_ms: float = 0.0,
    clock_seed: int | None = None,
) -> Iterator[Sandbox]:
    """Serve a fresh sandbox from a background thread for the duration of the block.

    `clock_offset_ms`/`clock_jitter_ms`: the gym's clock against ours (see `Sandbox.set_clock`).
    """
    clock = settings_from_ms(clock_offset_ms, clock_jitter_ms, clock_seed)
    state = SandboxState(accept_any_session=accept_any_session, clock=clock)
    server = make_server(host, port, state)
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
