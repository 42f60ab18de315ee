"""The sandbox's in-memory gym: classes, sessions, bookings, arrivals and faults.

Everything here is guarded by one lock, so any number of server threads can share a
`SandboxState`. Nothing here knows about HTTP: the server parses, calls one method, answers.
"""

from __future__ import annotations

import itertools
import random
import threading
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aimharder_sandbox.clock import ClockSettings, GymClock, as_ns, opening_ns

DEFAULT_BOX = "sandbox"
DEFAULT_ZONE = "Europe/Madrid"
DEFAULT_CAPACITY = 20
DEFAULT_TIMEOUT_DELAY_MS = 30_000
FAULT_MODES = frozenset({"none", "error_500", "timeout", "slow", "garbage"})
TOO_EARLY_KEY = "ERROR_ANTELACION_CLIENTE"
TOO_EARLY_HOURS_KEY = "ERROR_ANTELACION_CLIENTE_HORAS"
TOO_EARLY_MESSAGE = "No puedes reservar clases con más de 4 días de antelación"
SAME_TIME_MESSAGE = "No puedes hacer más de una reserva a la misma hora"
FULL_MESSAGE = "La clase está completa"
NO_CREDITS_MESSAGE = "No te quedan sesiones disponibles en tu tarifa"


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
    # The rule that set `opens_at_ns`, when the class was defined by its start (for the message).
    opens_days_before: int | None = None
    opens_hours_before: int | None = None

    def too_early(self) -> dict[str, Any]:
        """AimHarder's `-12` answer for this class: the key and message name its rule."""
        if self.opens_days_before is None and self.opens_hours_before is not None:
            hours = self.opens_hours_before
            message = f"No puedes reservar clases con más de {hours} horas de antelación"
            return _refusal(-12, TOO_EARLY_HOURS_KEY, message)
        if self.opens_days_before is not None:
            days = self.opens_days_before
            message = f"No puedes reservar clases con más de {days} días de antelación"
            return _refusal(-12, TOO_EARLY_KEY, message)
        return _refusal(-12, TOO_EARLY_KEY, TOO_EARLY_MESSAGE)


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
    """One `/api/book` request as the sandbox saw it.

    `at_ns`: the kernel's receive stamp on this machine's clock (the measurement truth);
    `gym_at_ns`: what the gym's clock read then (offset and jitter applied): what it decided on.
    """

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
    gym_at_ns: int | None = None


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
    return as_ns(moment)


def scheduled_class(
    class_id: str,
    *,
    start: str,
    zone: str = DEFAULT_ZONE,
    opens_days_before: int | None = None,
    opens_hours_before: int | None = None,
    **fields: Any,
) -> SandboxClass:
    """A class defined as AimHarder boxes define them: its start and the box's window rule.

    Its day and time are the start's, in the box's zone; it opens by `clock.opening_ns`.
    No rule: open at once.

    Raises:
        ValueError: a start without offset, a negative rule; ZoneInfoNotFoundError: bad zone.
    """
    moment = datetime.fromisoformat(start)
    if moment.tzinfo is None:
        raise ValueError("start needs a UTC offset")
    if min(opens_days_before or 0, opens_hours_before or 0) < 0:
        raise ValueError("a window rule counts days or hours before the class, not after")
    local = moment.astimezone(ZoneInfo(zone))
    ruled = opens_days_before is not None or opens_hours_before is not None
    opens = opening_ns(moment, zone, opens_days_before, opens_hours_before) if ruled else None
    end = local + timedelta(hours=1)
    return SandboxClass(
        class_id=class_id,
        day=local.strftime("%Y%m%d"),
        opens_at_ns=opens,
        time=f"{local:%H:%M} - {end:%H:%M}",
        opens_days_before=opens_days_before,
        opens_hours_before=opens_hours_before,
        **fields,
    )


def _ok(state: int, **extra: Any) -> dict[str, Any]:
    return {"bookState": state, "clasesContratadas": "WOD", **extra}


def _refusal(state: int, key: str | None, message: str) -> dict[str, Any]:
    body = _ok(state, errorMssg=message)
    if key is not None:
        body["errorMssgLang"] = key
    return body


class SandboxState:
    """The whole sandbox, behind one lock."""

    def __init__(
        self, *, accept_any_session: bool = True, clock: ClockSettings | None = None
    ) -> None:
        self.accept_any_session = accept_any_session
        self.clock = GymClock(clock)
        self._box_ids: dict[str, str] = {}
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

    def set_box_id(self, box: str, box_id: str) -> None:
        """Give a box its numeric id (the `box` parameter its listing requires).

        Raises:
            ValueError: the id is not all digits.
        """
        if not box_id.isdigit():
            raise ValueError(f"a box id is numeric, not {box_id!r}")
        with self._lock:
            self._box_ids[box] = box_id

    def box_id(self, box: str) -> str:
        """The box's numeric id: the configured one, else a stable one derived from its name."""
        with self._lock:
            return self._box_ids.get(box) or default_box_id(box)

    def set_clock(self, settings: ClockSettings) -> None:
        """Set how far the gym's clock is from ours (offset, per-request jitter)."""
        self.clock.configure(settings)

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
                "boxes": dict(self._box_ids),
                "clock": self.clock.settings.to_json(),
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

    def book(
        self,
        *,
        box: str,
        class_id: str,
        day: str,
        user: str | None,
        at_ns: int,
        gym_ns: int | None = None,
    ) -> BookReply:
        """Handle one `/api/book` that arrived at `at_ns`, record it, say what to answer.

        `gym_ns`: what the gym's clock read at that instant (default: `at_ns` plus a skew drawn
        from the sandbox's clock); the window is judged by it, as AimHarder judges by its own.
        """
        if gym_ns is None:
            gym_ns = at_ns + self.clock.draw_skew_ns()
        valid = self.is_valid_session(user)
        with self._lock:
            fault = self._take_fault()
            if fault.mode == "error_500":
                reply = BookReply(500, None, fault)
            elif not valid:
                reply = BookReply(200, {"logout": 1}, fault)
            else:
                reply = BookReply(200, self._book(box, class_id, day, user or "", gym_ns), fault)
            self._record(reply, Arrival(at_ns, box, class_id, day, user, None, gym_at_ns=gym_ns))
        return reply

    def listing(
        self, *, box: str, day: str, user: str | None, box_param: str | None = None
    ) -> dict[str, Any]:
        """The `/api/bookings` body for one day, seen by `user`.

        `box_param` is the listing's `box` query parameter: AimHarder lists the classes of the
        box with that numeric id, so anything but this box's id lists none of its classes.
        """
        if not self.is_valid_session(user):
            return {"logout": 1}
        wanted = self.box_id(box)
        with self._lock:
            classes = [c for c in self._classes.values() if c.box == box and c.day == day]
            rows = [self._row(c, user or "") for c in classes] if box_param == wanted else []
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

    def _book(self, box: str, class_id: str, day: str, user: str, gym_ns: int) -> dict[str, Any]:
        cls = self._class(box, class_id, day)
        if cls.opens_at_ns is not None and gym_ns < cls.opens_at_ns:
            return cls.too_early()
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

    def _record(self, reply: BookReply, seen: Arrival) -> None:
        """Keep one arrival, completed with what was answered."""
        body = reply.body or {}
        reservation = body.get("id")
        seen.book_state = body.get("bookState")
        seen.error_key = body.get("errorMssgLang")
        seen.reservation_id = str(reservation) if reservation is not None else None
        seen.fault = reply.fault.mode
        seen.status = reply.status
        seen.logout = bool(body.get("logout"))
        self._arrivals.append(seen)


def default_box_id(box: str) -> str:
    """A stable five-digit id for a box nobody configured (AimHarder's look like `10122`)."""
    return str(10_000 + zlib.crc32(box.encode()) % 90_000)
