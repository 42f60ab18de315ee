"""A process that races for prebookings (used by the concurrency tests; spawned, not imported)."""

from __future__ import annotations

import random
import threading
from typing import Any


def race(db_url: str, fernet_key: str, ids: list[str], threads: int, seed: int) -> list[str]:
    """Claim-and-book every id from `threads` threads; returns the ids this process booked."""
    from flask_app import close, create_app
    from flask_app.core.execution import Action, get_executor
    from tests.fakes import FakeBookingClient

    client = FakeBookingClient()
    app = create_app(
        {"DATABASE_URL": db_url, "SESSION_ENCRYPTION_KEYS": fernet_key, "AIMHARDER_CLIENT": client}
    )
    executor = get_executor(app)
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        order = list(ids)
        random.Random(seed * 1000 + n).shuffle(order)
        barrier.wait()
        try:
            for pid in order:
                attempt = executor.attempt(pid, path=random.choice(["cron", "qstash"]))
                assert attempt.action in (Action.EXECUTED, Action.LOST_CLAIM), attempt
        except BaseException as exc:  # surfaced to the parent below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    close(app)
    if errors:
        raise errors[0]
    booked: list[str] = []
    by_class: dict[str, Any] = {call["class_id"]: call for call in client.calls}
    booked.extend(by_class)  # class_id is the prebooking id in these tests
    assert len(client.calls) == len(by_class), "one process booked the same prebooking twice"
    return booked
