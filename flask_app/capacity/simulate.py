"""A discrete-event simulation of one crowd, to check the closed-form model event by event.

Small hand-written event loop (heapq). Each gunicorn worker is one process that runs one job
at a time (its GIL) from a priority queue: the firing line's writes first (they preempt, as
the 0.5 ms GIL switch interval lets the firing thread in), then preparing, then admitting,
then recording. The processes of an instance share its cores by processor sharing: k busy
entities on c cores each run at min(1, c/k). PostgreSQL's CPU, when colocated, is one more
entity per statement burst. What the closed form assumes away and this keeps: random routing
of deliveries to processes, QStash's jitter drawn per delivery, leaders elected by whichever
process arms a class first (so classes do not spread evenly), GIL queueing inside a process.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from flask_app.capacity.costs import UnitCosts
from flask_app.capacity.inputs import PlanInput
from flask_app.capacity.model import lead_s, percentile

FIRE, PREPARE, ADMIT, RECORD = 0, 1, 2, 3


@dataclass
class Job:
    """CPU work for one process; `done` runs when its last bit of work is served."""

    priority: int
    work: float  # CPU seconds
    done: Callable[[], None] = lambda: None
    order: float = 0.0  # inside a priority: the firing line's fire instant, else submission
    started: float | None = None


@dataclass
class _Proc:
    instance: int
    queue: list[tuple[int, float, int, Job]] = field(default_factory=list)
    job: Job | None = None


class Engine:
    """Processes on instances' cores, jobs on processes, callbacks at instants."""

    def __init__(self, instances: int, workers: int, cores: float, start: float = 0.0) -> None:
        self.now = start
        self.cores = cores
        self.procs = [_Proc(i // workers) for i in range(instances * workers)]
        self._by_instance = [self.procs[i * workers : (i + 1) * workers] for i in range(instances)]
        self._db: list[list[list[float]]] = [[] for _ in range(instances)]  # [remaining] cells
        self._events: list[tuple[float, int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._version = [0] * instances
        self._updated = [start] * instances

    # --- scheduling ----------------------------------------------------------------------

    def at(self, when: float, action: Callable[[], None]) -> None:
        """Run `action` at `when` (never in the past)."""
        heapq.heappush(self._events, (max(when, self.now), next(self._seq), -1, action))

    def run(self) -> None:
        while self._events:
            when, _seq, _instance, action = heapq.heappop(self._events)
            self.now = when
            action()

    # --- work ----------------------------------------------------------------------------

    def submit(self, proc: int, job: Job) -> None:
        """Queue `job` on process `proc` now (a FIRE job preempts a lower-priority one)."""
        p = self.procs[proc]
        self._advance(p.instance)
        if job.priority != FIRE:
            job.order = self.now
        heapq.heappush(p.queue, (job.priority, job.order, next(self._seq), job))
        running = p.job
        if running is not None and job.priority == FIRE and running.priority != FIRE:
            heapq.heappush(p.queue, (running.priority, running.order, next(self._seq), running))
            p.job = None
        self._start(p)
        self._reschedule(p.instance)

    def db(self, instance: int, work: float) -> None:
        """PostgreSQL work on `instance`'s cores (many backends: no queue of its own)."""
        self._advance(instance)
        self._db[instance].append([work])
        self._reschedule(instance)

    def _start(self, p: _Proc) -> None:
        if p.job is None and p.queue:
            p.job = heapq.heappop(p.queue)[3]
            if p.job.started is None:
                p.job.started = self.now

    def _busy(self, instance: int) -> int:
        procs = sum(1 for p in self._by_instance[instance] if p.job is not None)
        return procs + len(self._db[instance])

    def _rate(self, instance: int) -> float:
        busy = self._busy(instance)
        return min(1.0, self.cores / busy) if busy else 1.0

    def _advance(self, instance: int) -> None:
        """Serve every running entity of the instance up to now."""
        served = (self.now - self._updated[instance]) * self._rate(instance)
        self._updated[instance] = self.now
        if served <= 0:
            return
        for p in self._by_instance[instance]:
            if p.job is not None:
                p.job.work -= served
        for cell in self._db[instance]:
            cell[0] -= served

    def _reschedule(self, instance: int) -> None:
        """One pending event per instance: its next completion at the current rate."""
        self._version[instance] += 1
        left = [p.job.work for p in self._by_instance[instance] if p.job is not None]
        left += [cell[0] for cell in self._db[instance]]
        if not left:
            return
        when = self.now + max(0.0, min(left)) / self._rate(instance)
        version = self._version[instance]
        heapq.heappush(
            self._events,
            (when, next(self._seq), instance, lambda: self._complete(instance, version)),
        )

    def _complete(self, instance: int, version: int) -> None:
        if version != self._version[instance]:
            return  # superseded by a later change of the instance's rate
        self._advance(instance)
        self._db[instance] = [cell for cell in self._db[instance] if cell[0] > 1e-9]
        finished = []
        for p in self._by_instance[instance]:
            if p.job is not None and p.job.work <= 1e-9:
                finished.append(p.job)
                p.job = None
                self._start(p)
        self._reschedule(instance)
        for job in finished:
            job.done()


# --- generic queue, for tests against known answers ---------------------------------------


def run_jobs(
    arrivals: Sequence[float],
    work: float,
    *,
    processes: int = 1,
    cores: float = 1.0,
    instances: int = 1,
    route: Callable[[int], int] | None = None,
) -> list[float]:
    """Completion time of each arrival, `work` CPU seconds each, routed `route(i)`."""
    workers = processes // instances
    engine = Engine(instances, workers, cores)
    done = [math.nan] * len(arrivals)
    for i, t in enumerate(arrivals):
        target = route(i) if route else i % (instances * workers)

        def arrive(i: int = i, target: int = target) -> None:
            def finish() -> None:
                done[i] = engine.now

            engine.submit(target, Job(ADMIT, work, finish))

        engine.at(t, arrive)
    engine.run()
    return done


# --- one crowd ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CrowdResult:
    """What one simulated crowd did."""

    seed: int
    last_admitted_s: float
    stragglers: int
    late_admissions: int
    leader_processes: int
    busiest_leader_shots: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def simulate_crowd(
    p: PlanInput,
    c: UnitCosts,
    *,
    seed: int = 1,
    routing: Literal["random", "round-robin"] = "random",
) -> CrowdResult:
    """Admit, adopt, prepare and fire one crowd of `load.largest_crowd` at T = 0."""
    d, q = p.deployment, p.qstash
    n, k = p.load.largest_crowd, p.load.crowd_classes
    rng = random.Random(seed)
    engine = Engine(d.instances, d.workers_per_instance, d.app_cores, start=-q.max_lead_s - 2)
    armed: list[float | None] = [None] * n
    leader: list[int | None] = [None] * k
    lateness: list[float] = []
    adopted = False
    ms = 1 / 1000
    stagger = q.fire_stagger_ms * ms

    def fire(proc: int, rank: int) -> None:
        at = stagger * (rank // k)

        def written() -> None:
            lateness.append(engine.now + c.base_latency_ms * ms)
            engine.submit(proc, Job(RECORD, c.record_ms * ms))

        engine.at(at, lambda: engine.submit(proc, Job(FIRE, c.shot_ms * ms, written, order=at)))

    def prepare(proc: int, rank: int) -> None:
        engine.submit(proc, Job(PREPARE, c.prepare_ms * ms, lambda: fire(proc, rank)))

    def arrive(rank: int, proc: int) -> None:
        def on_armed() -> None:
            armed[rank] = engine.now
            if d.db_colocated and c.admission_db_ms > 0:
                engine.db(engine.procs[proc].instance, c.admission_db_ms * ms)
            cls = rank % k
            if leader[cls] is None:
                leader[cls] = proc  # the first to arm wins the fire_groups row
            if adopted:
                prepare(proc, rank)  # a straggler: its own process fires it

        engine.submit(proc, Job(ADMIT, c.admission_ms * ms, on_armed))

    def adopt() -> None:
        nonlocal adopted
        adopted = True
        members = sorted((r // k, r) for r in range(n) if armed[r] is not None)
        for _in_class, rank in members:
            owner = leader[rank % k]
            assert owner is not None  # an armed member's class has a leader
            prepare(owner, rank)

    for rank in range(n):
        due = -lead_s(rank, q)
        if q.whole_seconds:
            due = math.floor(due + 1e-9)
        when = due + rng.uniform(0, q.jitter_s)
        proc = rng.randrange(d.processes) if routing == "random" else rank % d.processes
        engine.at(when, functools.partial(arrive, rank, proc))
    engine.at(-q.adopt_lead_s, adopt)
    engine.run()
    shots: dict[int, int] = {}
    for rank in range(n):
        t = armed[rank]
        if t is not None and t <= -q.adopt_lead_s:
            owner = leader[rank % k]
            if owner is not None:
                shots[owner] = shots.get(owner, 0) + 1
    times = [t for t in armed if t is not None]
    return CrowdResult(
        seed=seed,
        last_admitted_s=round(max(times), 3),
        stragglers=sum(1 for t in times if t > -q.adopt_lead_s),
        late_admissions=sum(1 for t in times if t > 0),
        leader_processes=len({x for x in leader if x is not None}),
        busiest_leader_shots=max(shots.values(), default=0),
        p50_ms=round(percentile(lateness, 50) * 1000, 2),
        p99_ms=round(percentile(lateness, 99) * 1000, 2),
        max_ms=round(max(lateness) * 1000, 2),
    )


def simulate(p: PlanInput, c: UnitCosts, *, runs: int = 5, seed: int = 1) -> list[CrowdResult]:
    """`runs` crowds with seeds seed, seed+1, ..."""
    return [simulate_crowd(p, c, seed=seed + i) for i in range(runs)]
