"""The sandbox's in-memory gym: classes, sessions, bookings, arrivals and faults.

Everything here is guarded by one lock, so any number of server threads can share a
`SandboxState`. Nothing here knows about HTTP: the server parses, calls one method, answers.
"""

from __future__ import annotations

import itertools
import random
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_BOX = "sandbox"
DEFAULT_CAPACITY = 20
DEFAULT_TIMEOUT_DELAY_MS = 30_000
FAULT_MODES = frozenset({"none", "error_500", "timeout", "slow", "garbage"})
TOO_EARLY_MESSAGE = "No puedes reservar clases con más de 4 días de antelación"
SAME_TIME_MESSAGE = "No puedes hacer más de una reserva a la misma hora"
FULL_MESSAGE = "La clase está completa"
NO_CREDITS_MESSAGE = "No te quedan sesiones disponibles en tu tarifa"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class SandboxClass:
    """One class session on one day."""

    class_id: str
    day: str
    box: str = DEFAULT_BOX
    opens_at_ns: int | None = None
    capacity: int = DEFAULT_CAPACITY
    waitlist: int = 0
    name: str = "WOD"
    time: str = "08:00 - 09:00"


@dataclass
class Booking:
    """A reservation: booked (state 1) or waitlisted (state 0)."""

    reservation_id: str
    box: str
    class_id: str
    day: str
    user: str
    book_state: int


@dataclass
class Fault:
    """The fault applied to the next `/api/book` requests.

    `rate` None: every request gets the fault. `rate` in (0, 1]: each request gets it with that
    probability, drawn from a `random.Random(seed)` (same seed, same sequence of draws); `count`
    then limits how many requests actually get it.
    """

    mode: str = "none"
    count: int | None = None
    delay_ms: int | None = None
    rate: float | None = None
    seed: int | None = None


@dataclass
class Arrival:
    """One `/api/book` request as the sandbox saw it."""

    at_ns: int
    box: str
    class_id: str
    day: str
    user: str | None
    book_state: int | None
    error_key: str | None = None
    reservation_id: str | None = None
    fault: str = "none"
    status: int = 200
    logout: bool = False


@dataclass
class BookReply:
    """What the server should answer to one `/api/book`."""

    status: int
    body: dict[str, Any] | None
    fault: Fault = field(default_factory=Fault)


def parse_opens_at(value: str | None) -> int | None:
    """An ISO-8601 instant with offset as epoch nanoseconds (None stays None).

    Raises:
        ValueError: the value has no UTC offset or is not ISO-8601.
    """
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("opens_at needs a UTC offset")
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1_000


def _ok(state: int, **extra: Any) -> dict[str, Any]:
    return {"bookState": state, "clasesContratadas": "WOD", **extra}


def _refusal(state: int, key: str | None, message: str) -> dict[str, Any]:
    body = _ok(state, errorMssg=message)
    if key is not None:
        body["errorMssgLang"] = key
    return body


class SandboxState:
    """The whole sandbox, behind one lock."""

    def __init__(self, *, accept_any_session: bool = True) -> None:
        self.accept_any_session = accept_any_session
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._classes: dict[tuple[str, str, str], SandboxClass] = {}
        self._sessions: dict[str, int | None] = {}
        self._bookings: list[Booking] = []
        self._arrivals: list[Arrival] = []
        self._fault = Fault()
        self._fault_rng = random.Random()
        self._connections = 0

    # --- admin -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget classes, sessions, bookings, arrivals and faults."""
        with self._lock:
            self._classes.clear()
            self._sessions.clear()
            self._bookings.clear()
            self._arrivals.clear()
            self._fault = Fault()
            self._connections = 0

    def define_class(self, cls: SandboxClass) -> None:
        """Create or replace a class (its bookings stay)."""
        with self._lock:
            self._classes[(cls.box, cls.class_id, cls.day)] = cls

    def add_session(self, cookie: str, credits: int | None = None) -> None:
        """Register an `amhrdrauth` value; `credits=None` means unlimited."""
        with self._lock:
            self._sessions[cookie] = credits

    def set_fault(
        self,
        mode: str,
        count: int | None = None,
        delay_ms: int | None = None,
        *,
        rate: float | None = None,
        seed: int | None = None,
    ) -> None:
        """Apply `mode` to the next `count` bookings (None: until changed).

        With `rate` (0 < rate <= 1) each booking gets the fault with that probability instead,
        drawn from a generator seeded with `seed` (None: unpredictable); `count` then limits
        how many bookings get it.

        Raises:
            ValueError: unknown mode, or a rate outside (0, 1].
        """
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {sorted(FAULT_MODES)}")
        if rate is not None and not 0 < rate <= 1:
            raise ValueError(f"fault rate must be in (0, 1], not {rate!r}")
        with self._lock:
            self._fault = Fault(mode, count, delay_ms, rate, seed)
            self._fault_rng = random.Random(seed)

    def arrivals(self) -> list[dict[str, Any]]:
        """Every `/api/book` seen since the last clear, in arrival order."""
        with self._lock:
            return [asdict(a) for a in sorted(self._arrivals, key=lambda a: a.at_ns)]

    def clear_arrivals(self) -> None:
        with self._lock:
            self._arrivals.clear()

    def note_connection(self) -> None:
        """Count one accepted TCP connection (keep-alive reuse shows as fewer of them)."""
        with self._lock:
            self._connections += 1

    def connections(self) -> int:
        """TCP connections accepted since start or the last reset."""
        with self._lock:
            return self._connections

    def snapshot(self) -> dict[str, Any]:
        """Classes, sessions, bookings and the current fault, JSON-safe."""
        with self._lock:
            return {
                "classes": [asdict(c) for c in self._classes.values()],
                "sessions": [{"cookie": k, "credits": v} for k, v in self._sessions.items()],
                "bookings": [asdict(b) for b in self._bookings],
                "fault": asdict(self._fault),
                "connections": self._connections,
            }

    # --- AimHarder endpoints -----------------------------------------------------------

    def is_valid_session(self, cookie: str | None) -> bool:
        """Registered cookies are valid; with accept-any, so is any non-`expired*` value."""
        if not cookie:
            return False
        with self._lock:
            if cookie in self._sessions:
                return True
        return self.accept_any_session and not cookie.startswith("expired")

    def book(self, *, box: str, class_id: str, day: str, user: str | None, at_ns: int) -> BookReply:
        """Handle one `/api/book` that arrived at `at_ns`, record it, say what to answer."""
        valid = self.is_valid_session(user)
        with self._lock:
            fault = self._take_fault()
            if fault.mode == "error_500":
                reply = BookReply(500, None, fault)
            elif not valid:
                reply = BookReply(200, {"logout": 1}, fault)
            else:
                reply = BookReply(200, self._book(box, class_id, day, user or "", at_ns), fault)
            self._record(reply, box=box, class_id=class_id, day=day, user=user, at_ns=at_ns)
        return reply

    def listing(self, *, box: str, day: str, user: str | None) -> dict[str, Any]:
        """The `/api/bookings` body for one day, seen by `user`."""
        if not self.is_valid_session(user):
            return {"logout": 1}
        with self._lock:
            classes = [c for c in self._classes.values() if c.box == box and c.day == day]
            rows = [self._row(c, user or "") for c in classes]
        return {"clasesDisp": "", "timetable": [], "day": day, "bookings": rows, "seminars": []}

    def cancel(self, *, reservation_id: str, user: str | None) -> dict[str, Any]:
        """The `/api/cancelBook` body: 1 cancelled, 3 not cancellable; promotes the waitlist."""
        if not self.is_valid_session(user):
            return {"logout": 1}
        with self._lock:
            match = [b for b in self._bookings if b.reservation_id == reservation_id]
            if not match or match[0].user != user:
                return {"cancelState": 3}
            self._bookings.remove(match[0])
            self._promote(match[0])
        return {"cancelState": 1}

    # --- internals (lock held) -----------------------------------------------------------

    def _take_fault(self) -> Fault:
        fault = self._fault
        if fault.mode == "none":
            return fault
        if fault.rate is not None and self._fault_rng.random() >= fault.rate:
            return Fault()  # spared by the draw: not counted against `count`
        if fault.count is not None:
            fault.count -= 1
            if fault.count <= 0:
                self._fault = Fault()
        return Fault(fault.mode, None, fault.delay_ms)

    def _class(self, box: str, class_id: str, day: str) -> SandboxClass:
        key = (box, class_id, day)
        if key not in self._classes:
            self._classes[key] = SandboxClass(class_id=class_id, day=day, box=box)
        return self._classes[key]

    def _of_class(self, cls: SandboxClass) -> list[Booking]:
        return [
            b
            for b in self._bookings
            if (b.box, b.class_id, b.day) == (cls.box, cls.class_id, cls.day)
        ]

    def _book(self, box: str, class_id: str, day: str, user: str, at_ns: int) -> dict[str, Any]:
        cls = self._class(box, class_id, day)
        if cls.opens_at_ns is not None and at_ns < cls.opens_at_ns:
            return _refusal(-12, "ERROR_ANTELACION_CLIENTE", TOO_EARLY_MESSAGE)
        taken = self._of_class(cls)
        if any(b.user == user for b in taken):
            return _refusal(-12, "NOPUEDESRESERVAMISMAHORA", SAME_TIME_MESSAGE)
        booked = sum(1 for b in taken if b.book_state == 1)
        state = 1 if booked < cls.capacity else 0
        if state == 0 and len(taken) - booked >= cls.waitlist:
            return _refusal(-1, None, FULL_MESSAGE)
        if self._sessions.get(user) == 0:
            return _refusal(-2, None, NO_CREDITS_MESSAGE)
        return self._reserve(cls, user, state)

    def _reserve(self, cls: SandboxClass, user: str, state: int) -> dict[str, Any]:
        credits = self._sessions.get(user)
        if credits is not None:
            self._sessions[user] = credits - 1
        booking = Booking(str(next(self._ids)), cls.box, cls.class_id, cls.day, user, state)
        self._bookings.append(booking)
        return _ok(state, id=booking.reservation_id)

    def _promote(self, cancelled: Booking) -> None:
        if cancelled.book_state != 1:
            return
        cls = self._class(cancelled.box, cancelled.class_id, cancelled.day)
        waiting = [b for b in self._of_class(cls) if b.book_state == 0]
        if waiting:
            waiting[0].book_state = 1

    def _row(self, cls: SandboxClass, user: str) -> dict[str, Any]:
        taken = self._of_class(cls)
        mine = next((b for b in taken if b.user == user), None)
        row = {
            "id": cls.class_id,
            "classId": cls.class_id,
            "className": cls.name,
            "time": cls.time,
            "timeid": cls.time[:5].replace(":", "") + "_60",
            "bookState": mine.book_state if mine else None,
            "idres": mine.reservation_id if mine else None,
            "ocupation": sum(1 for b in taken if b.book_state == 1),
            "limit": cls.capacity,
            "waitlist": sum(1 for b in taken if b.book_state == 0),
            "enabled": 1,
        }
        return row

    def _record(
        self,
        reply: BookReply,
        *,
        box: str,
        class_id: str,
        day: str,
        user: str | None,
        at_ns: int,
    ) -> None:
        body = reply.body or {}
        reservation = body.get("id")
        self._arrivals.append(
            Arrival(
                at_ns=at_ns,
                box=box,
                class_id=class_id,
                day=day,
                user=user,
                book_state=body.get("bookState"),
                error_key=body.get("errorMssgLang"),
                reservation_id=str(reservation) if reservation is not None else None,
                fault=reply.fault.mode,
                status=reply.status,
                logout=bool(body.get("logout")),
            )
        )
