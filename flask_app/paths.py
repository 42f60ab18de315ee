"""The delivery paths: every way an arrival reaches the execution core, in one registry.

A path has a name (stored on each arrival and on the prebooking that path executed), says how
it comes to the app (what registers it), and how its arrivals are recorded: executed through
`Executor.attempt` (claim, book) or observed through `Executor.observe` (recorded, books
nothing). Observers (comparison, metrics, parity) work over whatever is registered, so adding
a path is one `register()` call:

    register(DeliveryPath("fallback", "the dispatcher's sweep", Recording.EXECUTE))

The QStash-side paths are the service's own and registered here; `legacy_cron.init_app`
registers the cron path. Nothing here touches Flask, the database or the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from flask_app.config import ConfigError
from flask_app.core.execution import Attempt, Executor


class Recording(StrEnum):
    """How a path's arrivals are recorded."""

    EXECUTE = "execute"  # Executor.attempt: claims the prebooking and books it
    OBSERVE = "observe"  # Executor.observe: recorded and timed, books nothing


class Coverage(StrEnum):
    """Which pending prebookings a path would execute under a configuration."""

    ALL = "all"
    SOME = "some"
    NONE = "none"


@dataclass(frozen=True)
class Reach:
    """A path's coverage under a configuration, and the settings that decide it."""

    coverage: Coverage
    because: str  # e.g. "QSTASH_ROLLOUT_PERCENT=50"


@dataclass(frozen=True)
class DeliveryPath:
    """One way an arrival reaches the execution core."""

    name: str
    registered_by: str  # how arrivals come, in words (shown by docs and the health check)
    recording: Recording = Recording.EXECUTE
    #: One message per prebooking: a prebooking with a message and no arrival of such a path
    #: counts as a missing delivery (parity).
    per_message: bool = False
    #: Takes every due pending prebooking by itself (a polling tick): a prebooking handed back
    #: to it is still executed.
    polls_due: bool = False
    #: Which prebookings it executes under a config. None: a backstop (executes what the
    #: others missed), never counted as covering on its own.
    reach: Callable[[Mapping[str, Any]], Reach] | None = None
    turn_on: str = ""  # the settings under which it takes every prebooking (for refusals)
    color: str = "#4a5568"  # its colour in the parity page's charts

    @property
    def executes(self) -> bool:
        """Whether its arrivals claim and book."""
        return self.recording is Recording.EXECUTE


_registry: dict[str, DeliveryPath] = {}


def register(path: DeliveryPath) -> DeliveryPath:
    """Add (or replace, by name) a path; idempotent, so every app of a process may call it."""
    _registry[path.name] = path
    return path


def registered() -> list[DeliveryPath]:
    """Every registered path, in registration order."""
    return list(_registry.values())


def get(name: str) -> DeliveryPath:
    """The registered path of that name, or an executing path with default traits (a name
    seen in stored arrivals whose module is gone, e.g. cron after its retirement)."""
    return _registry.get(name) or DeliveryPath(name, "unregistered")


def known(names: Iterable[str] = ()) -> list[DeliveryPath]:
    """The registered paths, then any other name given (first seen order)."""
    out = dict(_registry)
    for name in names:
        out.setdefault(name, get(name))
    return list(out.values())


def arrive(
    executor: Executor,
    name: str,
    prebooking_id: str,
    *,
    arrived_at: datetime | None = None,
    fire_at: datetime | None = None,
    message_id: str | None = None,
    retried: int | None = None,
    settle_at: datetime | None = None,
) -> Attempt:
    """Run one arrival of path `name` through the execution core, as the path records it."""
    if not get(name).executes:
        return executor.observe(
            prebooking_id, path=name, arrived_at=arrived_at, message_id=message_id, retried=retried
        )
    return executor.attempt(
        prebooking_id,
        path=name,
        arrived_at=arrived_at,
        fire_at=fire_at,
        message_id=message_id,
        retried=retried,
        settle_at=settle_at,
    )


def has_polling_path(config: Mapping[str, Any]) -> bool:
    """Whether an active path picks up any due pending prebooking by itself."""
    return any(
        p.polls_due and p.reach is not None and p.reach(config).coverage is not Coverage.NONE
        for p in _registry.values()
    )


def coverage_of(path: DeliveryPath, config: Mapping[str, Any]) -> str:
    """In one word, what the path does under `config`: all, some, none, observes, backstop."""
    if not path.executes:
        return "observes"
    return "backstop" if path.reach is None else str(path.reach(config).coverage)


def check_coverage(config: Mapping[str, Any]) -> None:
    """Refuse a configuration under which some pending prebookings have no path at all.

    Raises:
        ConfigError: no registered path executes every prebooking; names the variables.
    """
    reaches = {p.name: p.reach(config) for p in _registry.values() if p.reach is not None}
    if any(r.coverage is Coverage.ALL for r in reaches.values()):
        return
    why = "; ".join(f"{name}: {r.coverage} ({r.because})" for name, r in reaches.items())
    fixes = " or ".join(f"{p.turn_on} ({p.name})" for p in _registry.values() if p.turn_on)
    raise ConfigError(
        "some prebookings would never be booked: no delivery path takes every prebooking "
        f"({why or 'no path registered'}). Set {fixes or 'a path that takes them all'}"
    )


# --- the QStash path (the service's own) -----------------------------------------------------


def _qstash_reach(config: Mapping[str, Any]) -> Reach:
    if config.get("QSTASH_SHADOW"):
        return Reach(Coverage.NONE, "QSTASH_SHADOW=true: its deliveries book nothing")
    if not config.get("QSTASH_ENABLED"):
        return Reach(Coverage.NONE, "QSTASH_ENABLED=false")
    percent = int(config.get("QSTASH_ROLLOUT_PERCENT", 100))
    if percent < 100:
        return Reach(Coverage.SOME, f"QSTASH_ROLLOUT_PERCENT={percent}, below 100")
    return Reach(Coverage.ALL, "QSTASH_ENABLED=true, QSTASH_ROLLOUT_PERCENT=100")


QSTASH = register(
    DeliveryPath(
        "qstash",
        "one delayed QStash message per prebooking, delivered to /api/qstash/prebooking-execute",
        Recording.EXECUTE,
        per_message=True,
        reach=_qstash_reach,
        turn_on="QSTASH_ENABLED=true, QSTASH_SHADOW=false, QSTASH_ROLLOUT_PERCENT=100",
        color="#2b6cb0",
    )
).name
SHADOW = register(
    DeliveryPath(
        "shadow",
        "the QStash deliveries while QSTASH_SHADOW is on: verified, recorded, timed",
        Recording.OBSERVE,
        per_message=True,
        color="#805ad5",
    )
).name
