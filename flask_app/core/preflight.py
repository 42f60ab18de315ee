"""Before a window opens: check the stored session, and learn the gym's clock.

A stored AimHarder session that died is otherwise discovered at the instant (`logout` →
failed), too late for the user to log in again. PREFLIGHT_LEAD_S before each window, one cheap
authenticated read (the day's listing) per user checks it; a dead one turns the user's pending
prebookings `session_expired` (still bookable: the claim takes them at the instant, and a new
`PUT /api/sessions/<email>` revives them to `pending`) and tells the user (`sessions_expired`
signal → flask_app/notify.py).

Each prebooking is checked once: `session_checked_at` is set by one conditional UPDATE before
the check, so concurrent runs (the runner's job in several processes or instances) never check
the same prebooking twice; a check that could not tell (network trouble) clears it again, so
the next run retries.

`probe_clocks` refreshes the gym clock (flask_app/aimharder/gym_clock.py) of every box whose
window opens within GYM_CLOCK_LEAD_S.

Both run on the background runner (`init_app`): the session check every 30 s in one process
across every instance (a job lease), the clock probes every 30 s in EVERY process (an estimate
lives in the memory of the process that fires). Each runs in a thread of its own, one at a
time, so the runner's thread (the outbox, the dispatcher's sweep) never waits on AimHarder.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from flask_app import background
from flask_app.aimharder.client import SessionState
from flask_app.aimharder.gym_clock import get_gym_clocks
from flask_app.core import events
from flask_app.core.execution import get_executor
from flask_app.core.prebooking import Event, PrebookingStatus, sources, transition
from flask_app.models import Prebooking

log = logging.getLogger(__name__)

#: Prebookings checked per run, at most (the next run takes the rest).
BATCH = 500
NO_SESSION = "no AimHarder session stored for this user"
DEAD = (
    "the stored AimHarder session has expired (pre-flight check); store a new one with "
    "PUT /api/sessions/<email> before the window opens"
)


class SessionChecker(Protocol):
    """The part of the AimHarder client the pre-flight uses."""

    def check_session(
        self, *, box: str, box_id: str | None, day: str, cookies: dict[str, str]
    ) -> SessionState: ...


@dataclass
class PreflightReport:
    """What one run did."""

    checked: int = 0
    expired: list[str] = field(default_factory=list)
    unknown: int = 0
    users: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "expired": len(self.expired),
            "unknown": self.unknown,
            "users": self.users,
        }


@dataclass(frozen=True)
class _Due:
    id: str
    user_email: str
    booking_data: dict[str, Any]


def take_due(session: Session, now: datetime, lead: timedelta) -> list[_Due]:
    """Mark, and return, the pending prebookings opening within `lead` not checked yet.

    The mark is one conditional UPDATE ... RETURNING: a row is ours only if we set it.
    """
    candidates = select(Prebooking.id).where(
        Prebooking.status == PrebookingStatus.PENDING,
        Prebooking.session_checked_at.is_(None),
        Prebooking.available_at > now,
        Prebooking.available_at <= now + lead,
    )
    ids = list(session.scalars(candidates.order_by(Prebooking.available_at).limit(BATCH)))
    if not ids:
        return []
    stmt = (
        update(Prebooking)
        .where(Prebooking.id.in_(ids), Prebooking.session_checked_at.is_(None))
        .where(Prebooking.status == PrebookingStatus.PENDING)
        .values(session_checked_at=now)
        .returning(Prebooking.id, Prebooking.user_email, Prebooking.booking_data)
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(stmt).all()
    session.commit()
    return [_Due(r.id, r.user_email, r.booking_data) for r in rows]


def expire(app: Flask, session: Session, ids: list[str], reason: str, now: datetime) -> list[str]:
    """pending → session_expired (conditional: a row claimed meanwhile is left alone), and
    what the expiry owes (the users' events) in the same transaction."""
    stmt = (
        update(Prebooking)
        .where(Prebooking.id.in_(ids), Prebooking.status.in_(sources(Event.EXPIRE)))
        .values(
            status=transition(PrebookingStatus.PENDING, Event.EXPIRE),
            error_message=reason,
            updated_at=now,
        )
        .returning(Prebooking.id)
        .execution_options(synchronize_session=False)
    )
    expired = list(session.scalars(stmt))
    if expired:
        events.sessions_expired.send(app, prebooking_ids=expired, session=session, now=now)
    session.commit()
    return expired


def unmark(session: Session, ids: list[str]) -> None:
    """Forget a check that could not tell, so the next run tries again."""
    stmt = update(Prebooking).where(Prebooking.id.in_(ids)).values(session_checked_at=None)
    session.execute(stmt.execution_options(synchronize_session=False))
    session.commit()


def revive(session: Session, email: str, now: datetime) -> list[str]:
    """session_expired → pending for the user's prebookings (a new session was stored); they
    are checked again by the next run. Caller commits."""
    stmt = (
        update(Prebooking)
        .where(
            Prebooking.user_email == email,
            Prebooking.status.in_(sources(Event.REVIVE)),
        )
        .values(
            status=transition(PrebookingStatus.SESSION_EXPIRED, Event.REVIVE),
            session_checked_at=None,
            error_message=None,
            updated_at=now,
        )
        .returning(Prebooking.id)
        .execution_options(synchronize_session=False)
    )
    return list(session.scalars(stmt))


def _verdict(
    checker: SessionChecker, cookies: dict[str, str] | None, sample: dict[str, Any]
) -> SessionState:
    if cookies is None:
        return SessionState.DEAD
    return checker.check_session(
        box=sample["box"], box_id=sample.get("box_id"), day=sample["day"], cookies=cookies
    )


def check_sessions(app: Flask, now: datetime) -> PreflightReport:
    """One pre-flight run: each due prebooking's user's session checked once (one read per
    user), dead ones expired and announced."""
    executor = get_executor(app)
    lead = timedelta(seconds=int(app.config["PREFLIGHT_LEAD_S"]))
    report = PreflightReport()
    if lead <= timedelta(0):
        return report
    with executor.sessions() as session:
        due = take_due(session, now, lead)
        by_user: dict[str, list[_Due]] = defaultdict(list)
        for row in due:
            by_user[row.user_email].append(row)
        for email, rows in by_user.items():
            _check_user(app, session, executor, email, rows, now, report)
    report.checked, report.users = len(due), len(by_user)
    return report


def _check_user(
    app: Flask,
    session: Session,
    executor: Any,
    email: str,
    rows: list[_Due],
    now: datetime,
    report: PreflightReport,
) -> None:
    ids = [row.id for row in rows]
    try:
        cookies = executor.load_cookies(session, email)
        reason = NO_SESSION if cookies is None else DEAD
        state = _verdict(executor.client, cookies, rows[0].booking_data)
    except Exception as exc:  # a tampered row is as dead as a missing one; say why
        log.warning("pre-flight for %s: stored session unusable: %s", email, exc)
        state, reason = SessionState.DEAD, f"stored AimHarder session is unusable: {exc}"
    if state is SessionState.DEAD:
        report.expired += expire(app, session, ids, reason, now)
    elif state is SessionState.UNKNOWN:
        report.unknown += len(ids)
        unmark(session, ids)


def probe_clocks(app: Flask, now: datetime) -> dict[str, Any]:
    """Refresh the gym clock of every box whose window opens within GYM_CLOCK_LEAD_S
    (rate-limited per host: calling it often is cheap)."""
    clocks = get_gym_clocks(app)
    if clocks.policy.probes <= 0:
        return {"probed": [], "disabled": True}
    with get_executor(app).sessions() as session:
        boxes = boxes_opening(session, now, clocks.policy.lead)
    clocks.refresh_many(boxes)
    return {"probed": boxes, "estimates": clocks.snapshot()}


def boxes_opening(session: Session, now: datetime, lead: timedelta) -> list[str]:
    """The boxes with a prebooking still to fire whose window opens within `lead`."""
    rows = session.scalars(
        select(Prebooking.booking_data).where(
            Prebooking.status.in_(sources(Event.CLAIM)),
            Prebooking.available_at > now,
            Prebooking.available_at <= now + lead,
        )
    )
    return sorted({str(data["box"]) for data in rows if data and data.get("box")})


# --- on the background runner -----------------------------------------------------------------

SESSIONS_EVERY = timedelta(seconds=30)
CLOCKS_EVERY = timedelta(seconds=30)
_EXT = "gym_preflight_threads"


class Detached:
    """Runs a job's body in a daemon thread of its own, one run at a time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, body: Callable[[], Any]) -> bool:
        """Start `body` unless the previous run is still going; True if started."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._thread = threading.Thread(target=self._run, args=(body,), name=self.name)
            self._thread.daemon = True
            self._thread.start()
            return True

    def _run(self, body: Callable[[], Any]) -> None:
        try:
            body()
        except Exception:  # a bad pass must not kill later ones; the next start retries
            log.exception("%s failed", self.name)

    def join(self, timeout_s: float) -> None:
        """Wait for the current run (tests, shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)


def threads(app: Flask) -> dict[str, Detached]:
    """The app's detached job threads, by job name."""
    found: dict[str, Detached] = app.extensions[_EXT]
    return found


def _sessions_job(app: Flask) -> Callable[[datetime], dict[str, Any]]:
    def job(now: datetime) -> dict[str, Any]:
        if int(app.config["PREFLIGHT_LEAD_S"]) <= 0:
            return {"disabled": True}
        started = threads(app)["gym-preflight"].start(lambda: check_sessions(app, now))
        return {"started": started}

    return job


def _clocks_job(app: Flask) -> Callable[[datetime], dict[str, Any]]:
    def job(now: datetime) -> dict[str, Any]:
        if get_gym_clocks(app).policy.probes <= 0:
            return {"disabled": True}
        started = threads(app)["gym-clocks"].start(lambda: probe_clocks(app, now))
        return {"started": started}

    return job


def init_app(app: Flask) -> None:
    """Register the pre-flight session check and the clock probes on the background runner."""
    app.extensions[_EXT] = {name: Detached(name) for name in ("gym-preflight", "gym-clocks")}
    runner = background.get_runner(app)
    runner.register("gym-preflight", SESSIONS_EVERY, _sessions_job(app), lease=True)
    runner.register("gym-clocks", CLOCKS_EVERY, _clocks_job(app))
