"""The dispatcher: admission without a thread per prebooking, and FIFO per class across processes.

An arrival (a QStash delivery, a cron tick's candidate, the sweep) *arms* its prebooking: one
conditional UPDATE claims it for this process (`execution.claim`), and the dispatcher files it
under its class (`Prebooking.class_key`: box, class id, day, opening instant) in an in-memory
schedule; the caller answers at once. No thread waits per prebooking.

Each class fires as one group. `lead` before the group's instant, every process holding
members of it tries to become its leader: a `fire_groups` row won by a conditional insert,
which also fixes the group's *anchor* (the instant rank 0 fires; the opening in the gym's time,
or a moment from now when that has passed) for every process. The leader *adopts* every
claimed, unsent member of the class from every process (one UPDATE ... RETURNING), prepares
them (cookies, connection, bytes), marks them sent and hands them to the firing line at
`anchor + rank × stagger`, rank being the member's FIFO rank in its class by (created_at, id),
the same whichever process computes it. The others keep their members until `lead / 2` before
the anchor; whatever is still theirs then (armed after the leader's snapshot, or no leader
adopted it) they fire themselves at the same rank-derived instants. `watchdog` after the
anchor, a follower adopts whatever is still unsent in the class (a leader that died before
sending) and fires it at once, in rank order. Every send is preceded by a conditional mark
(`mark_sent_many`), so exactly one process sends each prebooking.

Answers are read by a selector (`aimharder.answers`), outcomes recorded by one recorder thread
(off the firing path) and announced on `events.attempt_finished` like every arrival. Too-early
answers and transient failures are re-sent at once a bounded number of times within a short
window; then the prebooking fails (too early) or is released for the sweep (transient).

Real-time clocks run all this on background threads started on first use (per process). Other
clocks (tests) run nothing by themselves: `drain()` advances the fake clock and does every step
inline, in order.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import os
import queue
import resource
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Annotated, Any, Protocol

from pydantic import Field
from pydantic_settings import BaseSettings
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from flask_app import config
from flask_app.aimharder.answers import AnswerReader
from flask_app.aimharder.client import (
    BookingOutcome,
    BookingResult,
    ListingCheck,
    PreparedBooking,
)
from flask_app.core.execution import (
    Action,
    Attempt,
    Claimed,
    Executor,
    adopt_many,
    claim,
    class_ranks_many,
    confirmed_result,
    fail,
    mark_sent_many,
    process_token,
    record,
    recovery_note,
    release,
    unsent_counts,
)
from flask_app.core.fire_groups import Bid, beat, elect_many
from flask_app.core.prebooking import PrebookingStatus
from flask_app.core.resend_rounds import ResendRounds, Waiting
from flask_app.models import is_valid_id
from flask_app.timing import Clock

log = logging.getLogger(__name__)

_EXT = "dispatcher"
#: The share of the lead over which processes' bids for one class are spread (_bid_delay).
BID_SPREAD = 0.2
#: Steps due within this of each other run as one batch (one statement for all their classes).
COALESCE = timedelta(milliseconds=10)
#: Answers AimHarder gives only once it judges the window open (its clock past the opening).
_JUDGED_OPEN = frozenset({BookingOutcome.BOOKED, BookingOutcome.WAITLISTED, BookingOutcome.FULL})
#: Extra time before the anchor the leader takes to mark and hand over each member of its batch.
MARK_PER_MEMBER = timedelta(microseconds=200)


# --- settings and collaborators -------------------------------------------------------------


class DispatchConfig(BaseSettings):
    """The dispatcher's variables (docs/firing.md), registered by `init_app`."""

    model_config = config.SETTINGS_CONFIG

    # A class's leader is elected, adopts and prepares its members this long before the
    # instant; raise it for classes of thousands over TLS.
    DISPATCH_LEAD_MS: Annotated[float, Field(ge=50, le=30_000)] = 1000.0
    # A class whose instant has passed fires this long after its election.
    DISPATCH_LATE_DELAY_MS: Annotated[float, Field(ge=0, le=5_000)] = 100.0
    # Followers rescue members still unsent this long after the anchor (a dead leader's).
    DISPATCH_WATCHDOG_MS: Annotated[float, Field(ge=10, le=10_000)] = 250.0
    # Prebookings one process holds, waiting or in flight; beyond, deliveries get 503.
    DISPATCH_MAX_HELD: Annotated[int, Field(ge=1, le=10_000_000)] = 20_000
    # Too-early and transient answers are sent again up to this many times, within the
    # window of the first send, the k-th no earlier than the gap × 2^(k-1) after the answer.
    DISPATCH_RESEND_MAX: Annotated[int, Field(ge=0, le=20)] = 3
    DISPATCH_RESEND_WINDOW_MS: Annotated[float, Field(ge=0, le=10_000)] = 1000.0
    DISPATCH_RESEND_GAP_MS: Annotated[float, Field(ge=0, le=1_000)] = 10.0
    # False: no adoption; every process fires its own members at rank-derived instants.
    DISPATCH_LEADER: bool = True
    # The sweep (core/sweep.py): how often, how far ahead, when a published prebooking still
    # pending counts as overdue (never before QStash's delivery could still arrive), and how
    # many claims without an outcome before it fails.
    DISPATCH_SWEEP_INTERVAL_S: Annotated[float, Field(ge=0.05, le=60)] = 0.5
    DISPATCH_SWEEP_HORIZON_S: Annotated[float, Field(ge=0.5, le=600)] = 5.0
    DISPATCH_OVERDUE_MS: Annotated[float, Field(ge=0, le=60_000)] = 1500.0
    DISPATCH_MAX_CLAIMS: Annotated[int, Field(ge=1, le=100)] = 3


@dataclass(frozen=True)
class DispatchSettings:
    """How the dispatcher paces a class (DISPATCH_* and QSTASH_FIRE_STAGGER_MS config)."""

    lead: timedelta = timedelta(seconds=1)  # elect, adopt and prepare this long ahead
    late_delay: timedelta = timedelta(milliseconds=100)  # anchor of a class already open
    watchdog: timedelta = timedelta(milliseconds=250)  # followers rescue unsent members then
    mark_lead: timedelta = timedelta(milliseconds=100)  # the leader marks its batch sent then
    # (plus MARK_PER_MEMBER for each member: 300 ms for 1,000)
    stagger: timedelta = timedelta(microseconds=10)  # between FIFO ranks
    max_held: int = 20_000  # prebookings waiting or in flight in this process
    resend_max: int = 3  # re-sends after a too-early or transient answer
    resend_window: timedelta = timedelta(seconds=1)  # ... all within this of the first send
    resend_gap: timedelta = timedelta(milliseconds=10)  # doubling: +10, +20, +40 ms
    leader: bool = True  # False: no adoption, every process fires its own at rank instants
    regroup_after: timedelta = timedelta(seconds=10)  # a group row this old is elected anew
    heartbeat: timedelta = timedelta(milliseconds=250)  # this process says it is alive
    liveness: timedelta = timedelta(seconds=2)  # silent this long: a watchdog takes its members
    watch_for: timedelta = timedelta(seconds=10)  # followers watch a class this long after it
    lease: timedelta = timedelta(seconds=60)
    prepare_threads: int = 16
    book_threads: int = 64  # clients without prepare (tests, AIMHARDER_FIRING_LINE=false)
    answer_timeout_s: float = 8.0

    @property
    def straggler_lead(self) -> timedelta:
        """When followers claim what the leader did not take: after its adoption, in time to
        prepare. Without a leader, as early as a leader would."""
        return self.lead / 2 if self.leader else self.lead

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DispatchSettings:
        """Read the DISPATCH_* settings (see flask_app/config.py)."""
        ms = timedelta(milliseconds=1)
        return cls(
            lead=float(config["DISPATCH_LEAD_MS"]) * ms,
            late_delay=float(config["DISPATCH_LATE_DELAY_MS"]) * ms,
            watchdog=float(config["DISPATCH_WATCHDOG_MS"]) * ms,
            stagger=float(config["QSTASH_FIRE_STAGGER_MS"]) * ms,
            max_held=int(config["DISPATCH_MAX_HELD"]),
            resend_max=int(config["DISPATCH_RESEND_MAX"]),
            resend_window=float(config["DISPATCH_RESEND_WINDOW_MS"]) * ms,
            resend_gap=float(config["DISPATCH_RESEND_GAP_MS"]) * ms,
            leader=bool(config["DISPATCH_LEADER"]),
            lease=timedelta(seconds=float(config["CLAIM_LEASE_SECONDS"])),
            answer_timeout_s=float(config["AIMHARDER_TIMEOUT_S"]),
        )


class GymClocks(Protocol):
    """The part of `aimharder.gym_clock` the dispatcher uses (issue 15)."""

    def fire_instant(self, box: str, opening_at: datetime) -> datetime:
        """Our clock's reading when the box's clock reads `opening_at`."""
        ...

    def note_too_early(self, box: str, *, sent_at: datetime, opening_at: datetime) -> None:
        """AimHarder said too early to a request sent at `sent_at` for `opening_at`."""
        ...

    def note_accepted(self, box: str, *, sent_at: datetime, opening_at: datetime) -> None:
        """AimHarder judged a request sent at `sent_at` after `opening_at` (booked, full)."""
        ...


class OwnClock:
    """Fires at the opening by our own clock (until the gym's clock estimator is wired)."""

    def fire_instant(self, box: str, opening_at: datetime) -> datetime:
        return opening_at

    def note_too_early(self, box: str, *, sent_at: datetime, opening_at: datetime) -> None:
        log.info("too early at box %s: sent %s for %s", box, sent_at, opening_at)

    def note_accepted(self, box: str, *, sent_at: datetime, opening_at: datetime) -> None:
        pass


class Telemetry(Protocol):
    """What the dispatcher reports (observe/metrics.py implements it)."""

    def admission(self, result: str) -> None: ...
    def held(self, count: int) -> None: ...
    def group(self, role: str) -> None: ...
    def resend(self, reason: str) -> None: ...
    def swept(self, what: str, count: int) -> None: ...


class NoTelemetry:
    """Reports nowhere."""

    def admission(self, result: str) -> None:
        pass

    def held(self, count: int) -> None:
        pass

    def group(self, role: str) -> None:
        pass

    def resend(self, reason: str) -> None:
        pass

    def swept(self, what: str, count: int) -> None:
        pass


#: (session, emails) -> email: cookies, or why they are unusable; absent: none stored.
CookieLoader = Callable[[Session, Iterable[str]], Mapping[str, "dict[str, str] | Exception"]]


# --- what the edges see ---------------------------------------------------------------------


class ArmResult(StrEnum):
    """What arming one prebooking came to."""

    ARMED = "armed"  # claimed here; it fires at its instant
    LOST = "lost_claim"  # claimed, finished, cancelled or unknown: someone else's or nobody's
    NOT_FOUND = "not_found"  # not even shaped like an id
    FULL = "full"  # this process holds its maximum: nothing claimed, retry later


@dataclass(frozen=True)
class Arrival:
    """Who brought a prebooking to the dispatcher, for its Attempt."""

    path: str
    arrived_at: datetime
    message_id: str | None = None
    retried: int | None = None


@dataclass(frozen=True)
class Admission:
    """The answer to `arm()`."""

    result: ArmResult
    prebooking_id: str
    fire_at: datetime | None = None  # the class's instant by our clock (gym time applied)


# --- the schedule ---------------------------------------------------------------------------


@dataclass
class Member:
    """A prebooking this process holds, from its claim until its outcome is recorded."""

    claimed: Claimed
    arrival: Arrival
    rank: int = 0
    cookies: dict[str, str] | None = None
    prepared: PreparedBooking | None = None
    fire_at: datetime | None = None
    role: str = "own"
    sends: int = 0
    first_sent_at: datetime | None = None
    settled: bool = False
    note: dict[str, Any] = field(default_factory=dict)  # what the recovery's listing check said

    @property
    def id(self) -> str:
        return self.claimed.id

    @property
    def form(self) -> dict[str, Any]:
        data = self.claimed.booking_data
        return {
            "box": data["box"],
            "class_id": data["class_id"],
            "day": data["day"],
            "family_id": data.get("family_id"),
        }


@dataclass
class Group:
    """One class as this process sees it."""

    key: str
    box: str
    opening: datetime
    fire_at: datetime  # the opening in the gym's time, by our clock
    elect_at: datetime
    waiting: dict[str, Member] = field(default_factory=dict)
    anchor: datetime | None = None
    stagger: timedelta = timedelta(0)
    premarked: bool = False
    watchdog_at: datetime | None = None
    ready: list[Member] = field(default_factory=list)  # the leader's, prepared, not yet marked
    due_at: datetime | None = None


# --- the dispatcher -------------------------------------------------------------------------


class Dispatcher:
    """This process's schedule of armed prebookings, and the machinery that fires them."""

    def __init__(
        self,
        executor: Executor,
        settings: DispatchSettings,
        load_cookies: CookieLoader,
        *,
        gym: GymClocks | None = None,
        telemetry: Telemetry | None = None,
        token: str | None = None,
    ) -> None:
        self.executor = executor
        self.settings = settings
        self.load_cookies = load_cookies
        self.gym: GymClocks = gym or OwnClock()
        self.telemetry: Telemetry = telemetry or NoTelemetry()
        self.staggers: dict[str, timedelta] = {}
        self.late_delays: dict[str, timedelta] = {}
        self._token = token  # None: this process's (tests run several dispatchers in one)
        self.refused = 0
        self._realtime = bool(getattr(executor.clock, "realtime", False))
        self._lock = threading.Condition()
        self._groups: dict[str, Group] = {}
        self._heap: list[tuple[datetime, int, str]] = []
        self._seq = itertools.count()
        self._held = 0
        self._queued = 0  # recorder jobs not yet done
        self._halt = threading.Event()  # set by stop(); also wakes the heartbeat's sleep
        self._pid = 0
        self._records: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._rounds: ResendRounds[_Sent] = ResendRounds(
            self._fire_round, wait=lambda: self.settings.resend_window, timers=self._realtime
        )
        self._prepare_pool: ThreadPoolExecutor | None = None
        self._book_pool: ThreadPoolExecutor | None = None
        self._reader = AnswerReader(timeout_s=settings.answer_timeout_s)

    # --- admission (request threads) ---------------------------------------------------------

    @property
    def clock(self) -> Clock:
        return self.executor.clock

    @property
    def token(self) -> str:
        """The claim token this dispatcher holds its prebookings under."""
        return self._token or process_token()

    @property
    def held(self) -> int:
        """Prebookings this process holds: waiting for their instant or in flight."""
        return self._held

    def arm(
        self, prebooking_id: str, arrival: Arrival, *, opening: datetime | None = None
    ) -> Admission:
        """Claim the prebooking for this process and schedule it; never waits for the instant.

        One conditional UPDATE. FULL (nothing claimed) when this process holds its maximum.
        """
        if not is_valid_id(prebooking_id):
            return Admission(ArmResult.NOT_FOUND, prebooking_id)
        if self._held >= self.settings.max_held:
            return self._refuse(prebooking_id)
        with self.executor.sessions() as session:
            claimed = claim(
                session,
                prebooking_id,
                path=arrival.path,
                now=self.clock.now(),
                lease=self.settings.lease,
                opening=opening,
                owner=self.token,
            )
        if claimed is None:
            self.telemetry.admission(ArmResult.LOST)
            return Admission(ArmResult.LOST, prebooking_id)
        group = self._register([Member(claimed, arrival)])[0]
        self.telemetry.admission(ArmResult.ARMED)
        return Admission(ArmResult.ARMED, prebooking_id, group.fire_at)

    def _refuse(self, prebooking_id: str) -> Admission:
        self.refused += 1
        self.telemetry.admission(ArmResult.FULL)
        log.warning(
            "dispatcher full (%d held, DISPATCH_MAX_HELD=%d): prebooking %s refused for now",
            self._held, self.settings.max_held, prebooking_id,
        )  # fmt: skip
        return Admission(ArmResult.FULL, prebooking_id)

    def note_lost(self, prebooking_id: str, arrival: Arrival) -> None:
        """Announce an arrival that armed nothing, finding out why off the request path."""
        base = Attempt(
            prebooking_id,
            arrival.path,
            arrival.arrived_at,
            Action.NOT_FOUND,
            message_id=arrival.message_id,
            retried=arrival.retried,
        )
        self._record_off_path(partial(self._announce_lost, base))

    def _announce_lost(self, base: Attempt) -> None:
        attempt = base
        if is_valid_id(base.prebooking_id):
            with self.executor.sessions() as session:
                attempt = self.executor.why_not(session, base)
        self.executor.announce(attempt)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop this process's dispatcher (the app is going away: a worker's exit, tests),
        within about `timeout_s`:

        1. its schedule stops (the dispatcher thread is joined, so no step is half done);
        2. every member it holds and has not sent is released to `pending` at once (one
           conditional UPDATE each, announced as `released`), so another process's sweep arms
           it before its instant instead of after this claim's lease;
        3. what is in flight (written, answer awaited) is waited for and recorded;
        4. the recorder, the heartbeat and the pools end and are joined.

        Nothing of ours touches the database after this returns, so the engine can be
        disposed."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._halt.set()
            self._lock.notify_all()
            threads, self._threads = self._threads, []
            pools = [pool for pool in (self._prepare_pool, self._book_pool) if pool is not None]
        for thread in threads:
            if thread.name == "dispatcher":
                thread.join(max(0.0, deadline - time.monotonic()))
        self._release_unsent("released by a process that was shutting down, before sending")
        with self._lock:  # answers of what was written, recorded by the recorder thread
            self._lock.wait_for(
                lambda: not (self._held or self._queued), max(0.0, deadline - time.monotonic())
            )
        self._records.put(_end_of_records)
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=False)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for pool in pools:
            for worker in list(getattr(pool, "_threads", ())):
                worker.join(max(0.0, deadline - time.monotonic()))

    def _release_unsent(self, reason: str) -> None:
        """Give back, from this thread, every member this process holds and has not sent."""
        with self._lock:
            groups, self._groups, self._heap = list(self._groups.values()), {}, []
        unsent = [
            member
            for group in groups
            for member in (*group.waiting.values(), *group.ready)
            if not member.settled
        ]
        for member in unsent:
            member.settled = True
            self._close(member)
            self._give_back_now(member, reason)
        if unsent:
            log.warning("shutting down: released %d unsent prebooking(s)", len(unsent))

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until this process holds nothing and watches no class (tests, short-lived
        processes); False if that did not happen within `timeout_s`."""
        with self._lock:
            return self._lock.wait_for(self._is_idle, timeout_s)

    def _is_idle(self) -> bool:
        return not (self._held or self._groups or self._queued)

    def set_path_timing(
        self, path: str, *, stagger: timedelta, late_delay: timedelta | None = None
    ) -> None:
        """Pace the classes `path` arms: ranks `stagger` apart, and, for a class whose instant
        has passed, its anchor `late_delay` after the election (room for other processes to
        arm theirs first; e.g. the legacy tick's, pinged on several workers at once)."""
        self.staggers[path] = stagger
        if late_delay is not None:
            self.late_delays[path] = late_delay

    def health(self) -> dict[str, Any]:
        """This process's admission figures for /api/health."""
        return {
            "held": self._held,
            "max_held": self.settings.max_held,
            "full": self._held >= self.settings.max_held,
            "refused": self.refused,
            "classes": len(self._groups),
            "leader_mode": self.settings.leader,
        }

    # --- the schedule ------------------------------------------------------------------------

    def _register(self, members: list[Member]) -> list[Group]:
        groups = []
        with self._lock:
            self._start()
            for member in members:
                group = self._group_for(member.claimed)
                if member.id not in group.waiting:
                    self._held += 1
                group.waiting[member.id] = member
                groups.append(group)
                self._reschedule(group)
            self.telemetry.held(self._held)
        return groups

    def _group_for(self, claimed: Claimed) -> Group:
        group = self._groups.get(claimed.class_key)
        if group is None:
            box = str(claimed.booking_data.get("box", ""))
            fire_at = self.gym.fire_instant(box, claimed.available_at)
            elect_at = fire_at - self.settings.lead + self._bid_delay(claimed.class_key)
            group = Group(claimed.class_key, box, claimed.available_at, fire_at, elect_at)
            self._groups[group.key] = group
        return group

    def _bid_delay(self, key: str) -> timedelta:
        """How long after `lead` before the instant this process bids for a class: a hash of
        its token and the class, spread over a fifth of the lead. Whichever process holding
        members draws the smallest bids first and leads, so classes opening together are led
        by different processes (rendezvous hashing), not all by the first one to wake up."""
        digest = hashlib.blake2b(f"{self.token}|{key}".encode(), digest_size=8).digest()
        share = int.from_bytes(digest, "big") / 2**64
        return self.settings.lead * BID_SPREAD * share

    def _next_due(self, group: Group) -> datetime | None:
        if group.anchor is None:
            return group.elect_at
        due = [group.watchdog_at] if group.watchdog_at is not None else []
        if group.ready:
            due.append(group.anchor - self._mark_lead(group))
        if not group.premarked:
            due.append(group.anchor - self.settings.straggler_lead)
        elif group.waiting:
            due.append(self.clock.now())
        return min(due, default=None)

    def _reschedule(self, group: Group) -> None:
        """Queue the group's next step, or forget it when nothing is left (lock held)."""
        due = self._next_due(group)
        if due is None:
            if self._groups.get(group.key) is group:
                del self._groups[group.key]
                self._lock.notify_all()
            return
        if group.due_at != due:
            group.due_at = due
            heapq.heappush(self._heap, (due, next(self._seq), group.key))
            self._lock.notify()

    def _pop_due(self, now: datetime) -> list[Group]:
        """Every group whose step is due by `now` (plus COALESCE: steps due together run as one
        batch, one statement for all their classes), lock held."""
        due: list[Group] = []
        until = now + COALESCE
        while self._heap:
            at, _, key = self._heap[0]
            group = self._groups.get(key)
            if group is None or group.due_at != at:
                heapq.heappop(self._heap)
                continue
            if at > until:
                break
            heapq.heappop(self._heap)
            group.due_at = None
            due.append(group)
        return due

    def drain(self, until: datetime | None = None) -> None:
        """Run every step due up to `until` (all of them if None), advancing a test clock."""
        while True:
            with self._lock:
                if not self._heap:
                    return
                head = min(self._heap)[0]
                if until is not None and head > until:
                    return
            self.clock.sleep_until(head)
            with self._lock:
                groups = self._pop_due(self.clock.now())
            if groups:
                self._step(groups)

    # --- background threads (real-time clocks only) ------------------------------------------

    def _start(self) -> None:
        # Lazily and once per process (a gunicorn worker inherits no threads), lock held.
        if not self._realtime or self._pid == os.getpid():
            return
        self._pid = os.getpid()
        _raise_open_files_limit()
        self._records = queue.SimpleQueue()
        self._prepare_pool = ThreadPoolExecutor(self.settings.prepare_threads, "dispatch-prepare")
        self._book_pool = ThreadPoolExecutor(self.settings.book_threads, "dispatch-book")
        threads = (
            (self._run, "dispatcher"),
            (self._run_records, "dispatch-record"),
            (self._run_heartbeat, "dispatch-heartbeat"),
        )
        for target, name in threads:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run_heartbeat(self) -> None:
        # Only while it holds or watches something: an idle process has nothing to rescue.
        pause = self.settings.heartbeat.total_seconds()
        while not self._halt.is_set():
            if not self._is_idle():
                self._beat()
            self._halt.wait(pause)

    def _beat(self) -> None:
        """Say this process is alive (watchdogs take over only what silent processes hold)."""
        try:
            with self.executor.sessions() as session:
                beat(session, self.token, self.clock.now())
        except SQLAlchemyError:
            log.warning("dispatcher heartbeat not written", exc_info=True)

    def _run(self) -> None:
        while not self._halt.is_set():
            with self._lock:
                groups = self._pop_due(self.clock.now())
                if not groups:
                    self._lock.wait(self._wait_s())
                    continue
            try:
                self._step(groups)
            except Exception:  # the schedule must survive anything: its members still wait
                log.exception("dispatcher step for %d class(es) failed; retrying", len(groups))
                for group in groups:
                    self._retry_later(group)

    def _wait_s(self) -> float | None:
        if not self._heap:
            return None
        return max(0.0, (min(self._heap)[0] - self.clock.now()).total_seconds())

    def _retry_later(self, group: Group) -> None:
        with self._lock:
            due = self.clock.now() + timedelta(milliseconds=50)
            group.due_at = due
            heapq.heappush(self._heap, (due, next(self._seq), group.key))

    def _run_records(self) -> None:
        while True:
            job = self._records.get()
            if job is _end_of_records:
                return
            try:
                job()
            except Exception:
                log.exception("recording a dispatched outcome failed")

    def _record_off_path(self, job: Callable[[], None]) -> None:
        if not self._realtime:
            job()
            return
        with self._lock:
            self._start()
            self._queued += 1
        self._records.put(partial(self._counted, job))

    def _counted(self, job: Callable[[], None]) -> None:
        try:
            job()
        finally:
            with self._lock:
                self._queued -= 1
                self._lock.notify_all()

    def _in_pool(self, pool: ThreadPoolExecutor | None, job: Callable[[], None]) -> None:
        if pool is None:
            job()
        else:
            pool.submit(_logged, job)

    # --- steps (the dispatcher thread), for every class due at once ---------------------------

    def _step(self, groups: list[Group]) -> None:
        """Elect, lead, mark, launch stragglers, rescue: each for all these classes at once.

        A step may run up to COALESCE before it is due (it was batched with others)."""
        if not self._realtime:
            self._beat()  # no heartbeat thread on a test clock
        self._elect([g for g in groups if g.anchor is None and self._soon() >= g.elect_at])
        soon = self._soon()
        marking = [g for g in groups if g.ready and soon >= _at(g) - self._mark_lead(g)]
        if marking:
            self._mark_and_send(marking)
        for group in groups:
            if group.anchor is not None and soon >= group.anchor - self.settings.straggler_lead:
                group.premarked = True
        own = [(g, self._take_waiting(g)) for g in groups if g.premarked and g.waiting]
        if own:
            self._launch(own, "own")
        soon = self._soon()
        rescue = [g for g in groups if g.watchdog_at is not None and soon >= g.watchdog_at]
        for group in rescue:
            group.watchdog_at = None
        if rescue:
            self._rescue(rescue)
        with self._lock:
            for group in groups:
                self._reschedule(group)

    def _soon(self) -> datetime:
        return self.clock.now() + COALESCE

    def _mark_lead(self, group: Group) -> timedelta:
        """How long before the anchor the leader marks its batch: enough to mark it (one
        statement) and for the line to check its connections (~20-40 µs each)."""
        return self.settings.mark_lead + MARK_PER_MEMBER * len(group.ready)

    def _take_waiting(self, group: Group) -> list[Member]:
        with self._lock:
            members = list(group.waiting.values())
            group.waiting.clear()
        return members

    def _elect(self, groups: list[Group]) -> None:
        """Bid for these classes (one statement); lead those won, watch the others."""
        if not groups:
            return
        now = self.clock.now()
        bids = [self._bid(group, now) for group in groups]
        with self.executor.sessions() as session:
            results = elect_many(session, bids, now, now - self.settings.regroup_after, self.token)
        led = []
        for group in groups:
            won = results[group.key]
            group.anchor, group.stagger = won.anchor, won.stagger
            self.telemetry.group("leader" if won.won else "follower")
            if won.won and self.settings.leader:
                group.premarked = True  # what it did not adopt it fires itself, at once
                led.append(group)
            elif self.settings.leader:
                group.watchdog_at = won.anchor + self.settings.watchdog
        if led:
            self._lead(led, now)

    def _bid(self, group: Group, now: datetime) -> Bid:
        """This process's terms for a class: the largest stagger and late delay its members'
        paths ask for; the anchor is the opening, or a moment from now if that has passed."""
        paths = {m.arrival.path for m in group.waiting.values()}
        stagger = max((self.staggers.get(p, self.settings.stagger) for p in paths), default=None)
        late = max((self.late_delays.get(p, self.settings.late_delay) for p in paths), default=None)
        late = late or self.settings.late_delay
        return Bid(group.key, max(group.fire_at, now + late), stagger or self.settings.stagger)

    def _lead(self, groups: list[Group], now: datetime) -> None:
        """Adopt every unsent member of these classes, from whichever process (one statement),
        and prepare them all now; they are marked sent and handed to the firing line shortly
        before their anchor (until then, were this process to die, a watchdog takes them)."""
        started = time.perf_counter()
        with self.executor.sessions() as session:
            claims = adopt_many(session, [g.key for g in groups], now, self.token)
        batch = [(g, self._adopted(g, claims.get(g.key, []))) for g in groups]
        try:
            ready = self._with_cookies(batch)
        except SQLAlchemyError as exc:
            self._give_all_back(batch, exc)
            return
        loaded = time.perf_counter()
        self._prepare_all([m for _, members in ready for m in members])
        for group, members in ready:
            group.ready = [m for m in members if not m.settled]
        done = time.perf_counter()
        log.info(
            "leading %d class(es), %d member(s): adopted and loaded in %.0f ms, prepared in"
            " %.0f ms, %.0f ms before the first anchor",
            len(groups), sum(len(m) for _, m in batch), (loaded - started) * 1e3,
            (done - loaded) * 1e3, (min(map(_at, groups)) - self.clock.now()).total_seconds() * 1e3,
        )  # fmt: skip

    def _rescue(self, groups: list[Group]) -> None:
        """After the anchor: adopt what is still unsent and held by a silent process (a dead
        leader, or a follower that died with stragglers) and fire it now, in rank order.
        Members of live processes are left to them, however slow; classes that still have
        unsent members are watched again, until `watch_for` after their anchor."""
        now = self.clock.now()
        keys = [g.key for g in groups]
        with self.executor.sessions() as session:
            silent = now - self.settings.liveness
            claims = adopt_many(session, keys, now, self.token, silent_since=silent)
            left = unsent_counts(session, keys)
        if claims:
            log.warning(
                "%d member(s) of %d class(es) held by a silent process after their anchor;"
                " firing them", sum(map(len, claims.values())), len(claims),
            )  # fmt: skip
        for group in groups:
            still = left.get(group.key, 0) - len(claims.get(group.key, []))
            if still > 0 and now < _at(group) + self.settings.watch_for:
                group.watchdog_at = now + self.settings.watchdog
        self._launch([(g, self._adopted(g, claims.get(g.key, []))) for g in groups], "watchdog")

    def _adopted(self, group: Group, claims: list[Claimed]) -> list[Member]:
        members = []
        with self._lock:
            for claimed in claims:
                local = group.waiting.pop(claimed.id, None)
                if local is None:
                    self._held += 1
                    members.append(Member(claimed, _arrival_of(claimed, self.clock.now())))
                else:
                    members.append(replace(local, claimed=claimed))
            self.telemetry.held(self._held)
        return members

    # --- launching members -------------------------------------------------------------------

    def _launch(self, batch: Batch, role: str) -> None:
        """Fire members this process found still its own after the leaders' adoption (or
        rescued after the anchor): mark first (most were adopted and need no connection),
        then prepare and send each at its rank-derived instant."""
        batch = [(g, members) for g, members in batch if members]
        if not batch:
            return
        try:
            ready = self._with_cookies(batch)
            kept = self._still_mine([m for _, members in ready for m in members])
        except SQLAlchemyError as exc:
            self._give_all_back(batch, exc)
            return
        mine = {m.id for m in kept}
        ready = [(g, [m for m in members if m.id in mine]) for g, members in ready]
        self._prepare_all([m for _, members in ready for m in members])
        self._schedule_sends(ready, role)

    def _mark_and_send(self, groups: list[Group]) -> None:
        """Mark the leaders' prepared batches sent (one statement, keeping what is still this
        process's) and hand them to the firing line, each class in FIFO order."""
        batch = [(g, g.ready) for g in groups]
        anchor = min(map(_at, groups))
        woke_ms = (anchor - self.clock.now()).total_seconds() * 1e3
        due_ms = max(self._mark_lead(g) for g in groups).total_seconds() * 1e3
        for group in groups:
            group.ready = []
        started = time.perf_counter()
        try:
            kept = {m.id for m in self._still_mine([m for _, members in batch for m in members])}
        except SQLAlchemyError as exc:
            self._give_all_back(batch, exc)
            return
        marked = time.perf_counter()
        sending = [(g, [m for m in members if m.id in kept]) for g, members in batch]
        self._schedule_sends(sending, "leader")
        left_ms = (anchor - self.clock.now()).total_seconds() * 1e3
        log.info("%d member(s) of %d class(es) sent to the firing line %.0f ms before the"
                 " first anchor (step began %.0f ms before it, due %.0f; marked in %.0f ms)",
                 len(kept), len(groups), left_ms, woke_ms, due_ms,
                 (marked - started) * 1e3)  # fmt: skip

    def _schedule_sends(self, batch: Batch, role: str) -> None:
        sending = []
        for group, members in batch:
            for member in sorted(members, key=lambda m: (m.rank, m.id)):
                if member.settled:
                    continue
                member.role = role
                member.fire_at = _at(group) + group.stagger * member.rank
                sending.append(member)
        self._send(sending)

    def _give_all_back(self, batch: Batch, exc: SQLAlchemyError) -> None:
        log.warning("%d class(es): database trouble before sending: %s", len(batch), exc)
        why = f"database unavailable before sending: {type(exc).__name__}"
        for _, members in batch:
            for member in members:
                if not member.settled:
                    self._close(member)
                    self._give_back(member, why)

    def _still_mine(self, members: list[Member]) -> list[Member]:
        """Mark these members sent (one statement); drop those another process holds now."""
        if not members:
            return []
        with self.executor.sessions() as session:
            claims = [m.claimed for m in members]
            mine = mark_sent_many(session, claims, self.clock.now(), self.token)
        kept = []
        for member in members:
            if member.id in mine:
                kept.append(member)
            else:
                member.settled = True
                self._drop(member)  # adopted by a leader (or finished) meanwhile
        return kept

    def _with_cookies(self, batch: Batch) -> Batch:
        """Ranks and cookies for every member of these classes (two queries); fail those with
        no usable session."""
        members = [m for _, group_members in batch for m in group_members]
        with self.executor.sessions() as session:
            ranks = class_ranks_many(session, [g.key for g, _ in batch])
            cookies = self.load_cookies(session, [m.claimed.user_email for m in members])
        ready: Batch = []
        for group, group_members in batch:
            kept = []
            for member in group_members:
                member.rank = ranks.get(member.id, 0)
                found = cookies.get(member.claimed.user_email)
                if found is None:
                    self._fail(member, "no AimHarder session stored for this user")
                elif isinstance(found, Exception):
                    self._fail(member, f"stored AimHarder session is unusable: {found}")
                else:
                    member.cookies = found
                    kept.append(member)
            ready.append((group, sorted(kept, key=lambda m: (m.rank, m.id))))
        return ready

    def _prepare_all(self, members: list[Member]) -> None:
        """Ask AimHarder first where a request may already have left; open the connections."""
        jobs = [partial(self._prepare_one, m) for m in members]
        pool = self._prepare_pool if self._realtime else None
        if pool is None or len(jobs) < 2:
            for job in jobs:
                _logged(job)
            return
        for future in [pool.submit(_logged, job) for job in jobs]:
            future.result()

    def _prepare_one(self, member: Member) -> None:
        assert member.cookies is not None
        if member.claimed.book_sent_at is not None:
            box_id = member.claimed.booking_data.get("box_id")
            check = self.executor.client.check_booked(
                **member.form, box_id=box_id, cookies=member.cookies
            )
            if check is ListingCheck.BOOKED:
                member.settled = True
                self._finish(member, confirmed_result(self.clock.now()), confirmed=True)
                return
            member.note = recovery_note(member.id, check)
        member.prepared = self._prepared(member)

    def _prepared(self, member: Member) -> PreparedBooking | None:
        prepare = getattr(self.executor.client, "prepare", None)
        if not self._realtime or self.executor.line is None or prepare is None:
            return None
        try:
            found: PreparedBooking | None = prepare(**member.form, cookies=member.cookies)
        except Exception:  # preparing is an optimisation: any trouble means the plain path
            log.exception("preparing the booking request of %s failed", member.id)
            return None
        return found

    # --- sending and answers -----------------------------------------------------------------

    def _send(self, members: list[Member]) -> None:
        self._rounds.sending(m.claimed.class_key for m in members)
        shots = []
        for member in members:
            assert member.fire_at is not None
            if member.prepared is not None and self.executor.line is not None:
                callback = partial(self._on_written, member, member.prepared)
                shots.append((member.prepared, member.fire_at, callback))
            else:
                self._book_plain(member, member.fire_at)
        if shots:
            assert self.executor.line is not None
            self.executor.line.submit(shots)

    def _on_written(self, member: Member, prepared: PreparedBooking, written: bool) -> None:
        # On the firing line's thread: hand the answer to the reader, or fall back at once.
        if written:
            on_answer = partial(self._on_read, member, prepared)
            self._reader.watch(prepared, on_answer, keep_open=True)
        else:
            log.info(
                "prepared booking of %s not sent (connection dropped); booking via httpx", member.id
            )
            self._book_plain(member, self.clock.now())

    def _book_plain(self, member: Member, at: datetime) -> None:
        """Book through `client.book()` at `at` (a pool thread; inline for test clocks)."""

        def book() -> None:
            self.clock.sleep_until(at)
            assert member.cookies is not None
            sent_at = self.clock.now()
            result = self.executor.client.book(**member.form, cookies=member.cookies)
            self._on_answer(member, None, result, sent_at)

        self._in_pool(self._book_pool if self._realtime else None, book)

    def _on_read(
        self, member: Member, prepared: PreparedBooking, result: BookingResult | None
    ) -> None:
        if result is None:  # nothing had left after all: the plain path, now
            self._close_prepared(prepared)
            self._book_plain(member, self.clock.now())
            return
        self._on_answer(member, prepared, result, result.sent_at)

    def _on_answer(
        self,
        member: Member,
        prepared: PreparedBooking | None,
        result: BookingResult,
        sent_at: datetime,
    ) -> None:
        member.sends += 1
        member.first_sent_at = member.first_sent_at or sent_at
        self._note_gym_clock(member, result, sent_at)
        reason = self._resend_reason(member, result, sent_at)
        if reason == "too_early":
            self.telemetry.resend(reason)
            self._join_round(member, prepared)
            return
        if reason is None:
            self._rounds.answered(member.claimed.class_key)
            self._close_prepared(prepared)
            self._finish(member, result)
            return
        self.telemetry.resend(reason)  # transient: again at once, still in flight
        self._send_again(member, prepared, self._resend_instant(member))

    def _note_gym_clock(self, member: Member, result: BookingResult, sent_at: datetime) -> None:
        """Tell the gym's clock what this answer says about it (too early: it is behind)."""
        box = str(member.claimed.booking_data.get("box", ""))
        opening_at = member.claimed.available_at
        if result.outcome is BookingOutcome.TOO_EARLY:
            self.gym.note_too_early(box, sent_at=sent_at, opening_at=opening_at)
        elif result.outcome in _JUDGED_OPEN:
            self.gym.note_accepted(box, sent_at=sent_at, opening_at=opening_at)

    def _resend_reason(
        self, member: Member, result: BookingResult, sent_at: datetime
    ) -> str | None:
        """Why this answer is worth sending again at once (None: record it)."""
        first = member.first_sent_at or sent_at
        if member.sends > self.settings.resend_max or sent_at - first > self.settings.resend_window:
            return None
        if result.outcome is BookingOutcome.TOO_EARLY:
            return "too_early"
        if result.outcome is not BookingOutcome.TRANSIENT:
            return None
        status = result.status_code
        if not result.request_sent or (status is not None and (status >= 500 or status == 429)):
            return "transient"
        return None  # written, then no answer: uncertain; the listing must be asked first

    def _resend_instant(self, member: Member) -> datetime:
        """At the gym's instant as now estimated (a too-early answer moved it), and at least
        `resend_gap` × 2^(sends-1) after this answer, so re-sends spread over a few tens of
        ms instead of all landing in the same millisecond."""
        box = str(member.claimed.booking_data.get("box", ""))
        gap: timedelta = self.settings.resend_gap * 2 ** (member.sends - 1)
        return max(self.clock.now() + gap, self.gym.fire_instant(box, member.claimed.available_at))

    def _join_round(self, member: Member, prepared: PreparedBooking | None) -> None:
        """Too early: too-early answers come for a whole class at once, so its members go
        out again together, in rank order (FIFO holds), once the class has no answer left in
        flight (resend_rounds.py), not each at its own answer's time."""
        waiting = Waiting(member.rank, member.id, self._resend_instant(member), (member, prepared))
        self._rounds.too_early(member.claimed.class_key, waiting)

    def _fire_round(self, key: str, round_: list[Waiting[_Sent]]) -> None:
        """Send a class's round: one instant (the latest any member may go, by the gym's
        clock as estimated now, and not before a gap from now, however long the round
        waited) plus rank × stagger, handed to the firing line in one batch, by rank."""
        first = round_[0].item[0]
        box = str(first.claimed.booking_data.get("box", ""))
        base = max(
            max(w.earliest for w in round_),
            self.clock.now() + self.settings.resend_gap,
            self.gym.fire_instant(box, first.claimed.available_at),
        )
        stagger = self.staggers.get(first.arrival.path, self.settings.stagger)
        shots = []
        for waiting in round_:
            member, prepared = waiting.item
            shot = self._shot_again(member, prepared, base + stagger * member.rank)
            if shot is not None:
                shots.append(shot)
        if shots:
            assert self.executor.line is not None
            self.executor.line.submit(shots)

    def _send_again(self, member: Member, prepared: PreparedBooking | None, at: datetime) -> None:
        shot = self._shot_again(member, prepared, at)
        if shot is not None:
            assert self.executor.line is not None
            self.executor.line.submit([shot])

    def _shot_again(
        self, member: Member, prepared: PreparedBooking | None, at: datetime
    ) -> _Shot | None:
        """The firing line's shot sending `member` again at `at` (None: booked the plain way)."""
        again = prepared.again() if prepared is not None else None
        if again is None and prepared is not None:
            again = self._prepared(member)
        if again is None or self.executor.line is None:
            self._book_plain(member, at)
            return None
        return (again, at, partial(self._on_written, member, again))

    # --- outcomes (the recorder thread) ------------------------------------------------------

    def _finish(self, member: Member, result: BookingResult, *, confirmed: bool = False) -> None:
        self._record_off_path(partial(self._record, member, result, confirmed))

    def _record(self, member: Member, result: BookingResult, confirmed: bool) -> None:
        with self._holding():
            self.executor.announce(self._write_outcome(member, result, confirmed))

    @contextmanager
    def _holding(self) -> Iterator[None]:
        """Release the member's hold once its outcome is written and announced (or failed)."""
        try:
            yield
        finally:
            self._release_hold()

    def _write_outcome(self, member: Member, result: BookingResult, confirmed: bool) -> Attempt:
        won = self._won(member)
        fired_at = member.first_sent_at or result.sent_at
        if result.outcome is BookingOutcome.TOO_EARLY and member.sends > 1:
            said = result.message or "bookState -12"
            result = replace(result, message=f"too early after {member.sends} sends: {said}")
        detail = {"fired_by": member.role, "rank": member.rank, "sends": member.sends}
        with self.executor.sessions() as session:
            attempt = record(
                session,
                member.claimed,
                won,
                result,
                fired_at,
                self.clock.now(),
                detail,
                member.note,
            )
        if confirmed:
            return replace(attempt, action=Action.CONFIRMED, fired_at=None, booking_latency=None)
        return attempt

    def _won(self, member: Member) -> Attempt:
        arrival = member.arrival
        return Attempt(
            member.id,
            arrival.path,
            arrival.arrived_at,
            Action.EXECUTED,
            available_at=member.claimed.available_at,
            won=True,
            message_id=arrival.message_id,
            retried=arrival.retried,
        )

    def _fail(self, member: Member, reason: str) -> None:
        member.settled = True

        def job() -> None:
            with self._holding():
                with self.executor.sessions() as session:
                    fail(session, member.claimed, reason, self.clock.now())
                detail = {"reason": reason}
                failed = PrebookingStatus.FAILED
                attempt = replace(self._won(member), action=Action.FAILED, status=failed)
                self.executor.announce(replace(attempt, detail=detail))

        self._record_off_path(job)

    def _give_back(self, member: Member, reason: str) -> None:
        """Release a member nothing was sent for (the sweep or a QStash retry takes it again)."""
        self._record_off_path(partial(self._give_back_now, member, reason))

    def _give_back_now(self, member: Member, reason: str) -> None:
        with self._holding():
            try:
                with self.executor.sessions() as session:
                    now = self.clock.now()
                    if not release(
                        session, member.claimed, keep_sent_mark=True, now=now, reason=reason
                    ):
                        return  # adopted (or settled) by another process: it announces
            except SQLAlchemyError:
                log.warning("could not release %s; its lease will expire", member.id)
            detail = {"request_sent": False, "uncertain": False, "message": reason}
            pending = PrebookingStatus.PENDING
            attempt = replace(self._won(member), action=Action.RELEASED, status=pending)
            self.executor.announce(replace(attempt, detail=detail))

    def _drop(self, member: Member) -> None:
        """Forget a member another process fires (it announces the outcome)."""
        self._close(member)
        self._release_hold()

    def _close(self, member: Member) -> None:
        self._close_prepared(member.prepared)
        member.prepared = None

    @staticmethod
    def _close_prepared(prepared: PreparedBooking | None) -> None:
        if prepared is not None:
            prepared.close()

    def _release_hold(self) -> None:
        with self._lock:
            self._held -= 1
            self.telemetry.held(self._held)
            self._lock.notify_all()


#: Classes with their members, as one step handles them.
Batch = list[tuple[Group, list[Member]]]
#: A member told too early, with the request it was sent by (None: the plain path).
_Sent = tuple[Member, PreparedBooking | None]
#: What the firing line takes: a prepared request, its instant, what to call once written.
_Shot = tuple[PreparedBooking, datetime, Callable[[bool], None]]


def _at(group: Group) -> datetime:
    """The group's anchor (set by its election, before any step that reads it)."""
    assert group.anchor is not None
    return group.anchor


def _arrival_of(claimed: Claimed, now: datetime) -> Arrival:
    """The arrival of a member adopted from another process, as its row tells it."""
    message_id = claimed.message_id if claimed.path == "qstash" else None
    return Arrival(claimed.path or "qstash", claimed.loaded_at or now, message_id)


def _end_of_records() -> None:
    """The sentinel that ends the recorder thread (stop())."""


def _logged(job: Callable[[], None]) -> None:
    try:
        job()
    except Exception:
        log.exception("dispatcher job failed")


def _raise_open_files_limit() -> None:
    """Each prepared booking holds a connection: allow as many open files as the system does."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        log.info("could not raise the open files limit", exc_info=True)


# --- wiring ---------------------------------------------------------------------------------


def init_app(app: Any, *, telemetry: Telemetry | None = None) -> None:
    """Register the DISPATCH_* settings and build the app's Dispatcher over its Executor
    (after execution.init_app)."""
    from flask_app.core import sessions
    from flask_app.core.execution import get_executor

    def load_cookies(
        session: Session, emails: Iterable[str]
    ) -> Mapping[str, dict[str, str] | Exception]:
        try:
            cipher = sessions.get_cipher(app)
        except sessions.SessionKeyError as exc:  # no keys: no session is usable
            return {email: exc for email in emails}
        return sessions.load_many(session, cipher, emails)

    config.register_settings(app, DispatchConfig)
    app.extensions[_EXT] = Dispatcher(
        get_executor(app),
        DispatchSettings.from_config(app.config),
        load_cookies,
        gym=app.extensions.get("gym_clocks"),
        telemetry=telemetry,
    )


def get_dispatcher(app: Any = None) -> Dispatcher:
    """The app's Dispatcher (the current app's when none is given)."""
    from flask import current_app

    dispatcher: Dispatcher = (app or current_app).extensions[_EXT]
    return dispatcher
