"""The closed-form capacity model: admission, lateness, connections, QStash, storage, cost.

Time is in seconds relative to the crowd's instant (T = 0, a whole second; negative = before).
The admission design it describes (issue 14): a delivery is verified and armed (`admission_ms`
of a process's CPU), then waits in memory; `adopt_lead_s` before the instant the class's leader
process prepares every armed member (`prepare_ms` each) and its one firing-line thread writes
them in FIFO order from the instant (`shot_ms` apart); members armed after the adoption
(stragglers) are prepared and fired by the process that armed them. Pure: inputs in, numbers
out; `simulate.py` checks the same questions event by event.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from flask_app.capacity import plans
from flask_app.capacity.costs import UnitCosts
from flask_app.capacity.inputs import Deployment, PlanInput, QStashTiming


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, as the benchmarks compute it (bench/precision_qstash.py)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def lead_s(rank: int, q: QStashTiming) -> float:
    """How long before the instant the message of crowd rank `rank` is due (planning.lead_for)."""
    room = max(0.0, q.max_lead_s - q.lead_s)
    return q.lead_s + min(q.crowd_lead_ms / 1000 * max(0, rank), room)


def arrival_offsets(n: int, q: QStashTiming, jitter_point: float) -> list[float]:
    """Each rank's delivery time; QStash's jitter taken at `jitter_point` (0.5 mean, 1 worst)."""
    out = []
    for rank in range(n):
        due = -lead_s(rank, q)
        if q.whole_seconds:  # not_before = floor(deliver_at); T is a whole second
            due = math.floor(due + 1e-9)
        out.append(due + jitter_point * q.jitter_s)
    return out


def admission_rate(d: Deployment, c: UnitCosts) -> float:
    """Deliveries admitted per second by the whole deployment (each process: one GIL)."""
    app_s = c.admission_ms / 1000
    db_s = c.admission_db_ms / 1000 if d.db_colocated else 0.0
    per_instance = min(d.workers_per_instance / app_s, d.app_cores / (app_s + db_s))
    return d.instances * per_instance


def fluid_departures(arrivals: Sequence[float], rate: float) -> list[float]:
    """When each arrival is served by a work-conserving server of `rate` jobs/s (FIFO)."""
    order = sorted(range(len(arrivals)), key=lambda i: arrivals[i])
    done = [0.0] * len(arrivals)
    free_at = -math.inf
    for i in order:
        free_at = max(arrivals[i], free_at) + 1 / rate
        done[i] = free_at
    return done


@dataclass(frozen=True)
class Admission:
    """Whether the crowd is armed before its leader adopts it."""

    deliveries: int
    first_arrival_s: float  # before the instant (negative)
    spread_s: float  # from the first delivery to the last (expected jitter)
    work_s: float  # deliveries / admission rate
    rate_per_s: float
    last_admitted_s: float  # worst-case jitter
    stragglers: int  # armed after the adoption (leader misses them)
    late: int  # armed after the instant
    all_admitted_in_time: bool
    busiest_second: int  # deliveries QStash makes in the crowd's busiest second


def admission(p: PlanInput, c: UnitCosts) -> tuple[Admission, list[float]]:
    """The crowd's admission, and each rank's armed time (worst-case jitter)."""
    q, n = p.qstash, p.load.largest_crowd
    expected = arrival_offsets(n, q, 0.5)
    worst = arrival_offsets(n, q, 1.0)
    rate = admission_rate(p.deployment, c)
    armed = fluid_departures(worst, rate)
    last = max(armed)
    return (
        Admission(
            deliveries=n,
            first_arrival_s=round(min(expected), 3),
            spread_s=round(max(expected) - min(expected), 3),
            work_s=round(n / rate, 3),
            rate_per_s=round(rate, 1),
            last_admitted_s=round(last, 3),
            stragglers=sum(1 for t in armed if t > -q.adopt_lead_s),
            late=sum(1 for t in armed if t > 0),
            all_admitted_in_time=last <= -q.adopt_lead_s,
            busiest_second=busiest_second(expected, q),
        ),
        armed,
    )


def busiest_second(arrivals: Sequence[float], q: QStashTiming) -> int:
    """The most deliveries inside any one-second window (jitter spread uniformly)."""
    if q.jitter_s <= 1e-9 or not q.whole_seconds:
        ordered, best, lo = sorted(arrivals), 0, 0
        for hi, t in enumerate(ordered):
            while t - ordered[lo] >= 1.0:
                lo += 1
            best = max(best, hi - lo + 1)
        return best
    buckets: dict[float, int] = {}
    for t in arrivals:  # same not_before second: spread over jitter_s; at most all of them
        key = round(t - 0.5 * q.jitter_s)
        buckets[key] = buckets.get(key, 0) + 1
    return max(math.ceil(count / max(1.0, q.jitter_s)) for count in buckets.values())


@dataclass(frozen=True)
class Firing:
    """Lateness at the instant (ms after it, at the box) from the firing lines' pace."""

    leader_processes: int
    busiest_leader_shots: int
    contention: float  # >= 1: firing processes per free core on the busiest instance
    prepare_s_busiest: float  # CPU the busiest leader needs to prepare its shots
    prepare_fits: bool  # inside adopt_lead_s
    p50_ms: float
    p99_ms: float
    max_ms: float


def firing(p: PlanInput, c: UnitCosts, armed: Sequence[float]) -> Firing:
    """Each shot's lateness: leaders even across processes, writes in FIFO order per process."""
    d, q, n, k = p.deployment, p.qstash, p.load.largest_crowd, p.load.crowd_classes
    leaders = min(k, d.processes)
    per_instance = min(d.workers_per_instance, math.ceil(leaders / d.instances))
    kappa = max(1.0, per_instance / d.app_cores)
    shot, prep = c.shot_ms / 1000 * kappa, c.prepare_ms / 1000 * kappa
    base, stagger = c.base_latency_ms / 1000, q.fire_stagger_ms / 1000
    batches: list[list[tuple[int, int]]] = [[] for _ in range(d.processes)]
    late: list[float] = []
    for rank in range(n):  # creation order interleaves the classes: class = rank % k
        cls, in_class = rank % k, rank // k
        if armed[rank] > -q.adopt_lead_s:  # straggler: its own process, as soon as armed
            late.append(max(stagger * in_class, armed[rank] + prep) + shot + base)
        else:
            batches[cls % d.processes].append((in_class, rank))
    busiest = max(len(b) for b in batches)
    for batch in batches:
        done = 0.0
        for i, (in_class, _rank) in enumerate(sorted(batch)):
            prepared = max(0.0, (i + 1) * prep - q.adopt_lead_s)
            done = max(done, stagger * in_class, prepared) + shot
            late.append(done + base)
    return Firing(
        leader_processes=leaders,
        busiest_leader_shots=busiest,
        contention=round(kappa, 2),
        prepare_s_busiest=round(busiest * prep, 3),
        prepare_fits=busiest * prep <= q.adopt_lead_s,
        p50_ms=round(percentile(late, 50) * 1000, 2),
        p99_ms=round(percentile(late, 99) * 1000, 2),
        max_ms=round(max(late) * 1000, 2),
    )


@dataclass(frozen=True)
class Throughput:
    """Sustained rates and daily CPU."""

    first_deliveries_per_s: float  # full booking per delivery (arm + prepare + fire + record)
    duplicates_per_s: float
    peak_hour_deliveries_per_s: float
    peak_hour_utilisation: float  # of the deployment's app cores
    cpu_core_hours_per_day: float


def throughput(p: PlanInput, c: UnitCosts) -> Throughput:
    """What the deployment sustains and what the day's load uses of it."""
    d, load = p.deployment, p.load
    full_ms = c.admission_ms + c.prepare_ms + c.shot_ms + c.record_ms
    db_ms = c.admission_db_ms if d.db_colocated else 0.0

    def rate(app_ms: float, extra_ms: float) -> float:
        per_instance = min(d.workers_per_instance / app_ms, d.app_cores / (app_ms + extra_ms))
        return d.instances * per_instance * 1000

    per_prebooking_ms = (
        c.create_ms + full_ms + db_ms + max(0.0, c.attempts_per_prebooking - 1) * c.duplicate_ms
    )
    peak = load.prebookings_per_day * load.peak_day_factor * load.peak_hour_share() / 3600
    cores = d.instances * d.app_cores
    return Throughput(
        first_deliveries_per_s=round(rate(full_ms, db_ms), 1),
        duplicates_per_s=round(
            rate(c.duplicate_ms, c.duplicate_db_ms if d.db_colocated else 0.0), 1
        ),
        peak_hour_deliveries_per_s=round(peak, 3),
        peak_hour_utilisation=round(peak * per_prebooking_ms / 1000 / cores, 4),
        cpu_core_hours_per_day=round(load.prebookings_per_day * per_prebooking_ms / 1000 / 3600, 3),
    )


@dataclass(frozen=True)
class Connections:
    """PostgreSQL connections: what the pools may open against what the server allows."""

    processes: int
    ceiling: int  # every pool full, plus other clients
    budget: int  # max_connections - reserved
    in_use_at_crowd: float  # Little's law at the crowd's busiest second
    fits: bool
    recommended_pool_per_process: int
    pgbouncer_needed: bool


def connections(p: PlanInput, c: UnitCosts, adm: Admission) -> Connections:
    """Whether the pools fit under max_connections, and what the crowd really keeps busy."""
    d = p.deployment
    ceiling = d.processes * (d.db_pool_size + d.db_max_overflow) + d.other_connections
    budget = d.max_connections - d.reserved_connections
    hold_s = c.statements_per_delivery * d.statement_latency_ms / 1000
    arriving = min(adm.rate_per_s, float(adm.busiest_second))  # deliveries/s at the peak
    in_use = arriving * hold_s + d.processes  # + one for each process's background runner
    per_process = max(2, math.ceil(2 * in_use / d.processes))
    fits = ceiling <= budget
    needed = not fits and d.processes * per_process + d.other_connections > budget
    return Connections(
        processes=d.processes,
        ceiling=ceiling,
        budget=budget,
        in_use_at_crowd=round(in_use, 1),
        fits=fits,
        recommended_pool_per_process=per_process,
        pgbouncer_needed=needed,
    )


@dataclass(frozen=True)
class QStashUse:
    """Messages a day and the plan that carries them."""

    messages_per_day: float
    attempts_per_day: float
    billed_per_day: float  # on the busiest day, as `billing` says
    billing: str
    plan: str | None
    monthly_usd: float | None
    refused: dict[str, str]
    other_billing_monthly_usd: float | None
    migration_plan: str | None
    migration_plan_monthly_usd: float | None
    rate_warning: str | None
    source: str


def qstash_use(p: PlanInput, c: UnitCosts, adm: Admission) -> QStashUse:
    """QStash messages and attempts per day, the cheapest fitting plan and its price."""
    q, load = p.qstash, p.load
    sched_day = (
        q.schedule_messages_per_day
        if q.schedule_messages_per_day is not None
        else c.schedule_messages_per_day
    )
    schedules = q.active_schedules if q.active_schedules is not None else int(c.active_schedules)
    messages = load.prebookings_per_day * c.messages_per_prebooking + sched_day
    attempts = load.prebookings_per_day * c.attempts_per_prebooking + sched_day
    per_day = {"messages": messages, "attempts": attempts}
    other = "messages" if q.billing == "attempts" else "attempts"
    sets = plans.load_plan_sets()
    chosen_set = sets[q.plans]

    def pick(plan_set: plans.PlanSet, billed: float) -> plans.PlanChoice:
        return plans.choose(
            plan_set,
            peak_per_day=billed * load.peak_day_factor,
            average_per_day=billed,
            schedules=schedules,
            delay_days=q.max_delay_days,
        )

    choice = pick(chosen_set, per_day[q.billing])
    alt = pick(chosen_set, per_day[other])
    migration = pick(sets["migration-plan"], messages)
    warning = None
    limit = choice.plan.max_requests_per_second if choice.plan else None
    if limit is not None and adm.busiest_second > limit:
        warning = (
            f"the crowd's busiest second has {adm.busiest_second} deliveries; "
            f"the plan may allow {limit:g}/s (older docs): spread it (QSTASH_CROWD_LEAD_MS)"
        )
    return QStashUse(
        messages_per_day=round(messages, 1),
        attempts_per_day=round(attempts, 1),
        billed_per_day=round(per_day[q.billing] * load.peak_day_factor, 1),
        billing=q.billing,
        plan=choice.plan.name if choice.plan else None,
        monthly_usd=choice.monthly_usd,
        refused=dict(choice.refused),
        other_billing_monthly_usd=alt.monthly_usd,
        migration_plan=migration.plan.name if migration.plan else None,
        migration_plan_monthly_usd=migration.monthly_usd,
        rate_warning=warning,
        source=chosen_set.source,
    )


@dataclass(frozen=True)
class StorageUse:
    """Rows a day and the steady-state database size under the retention."""

    prebooking_rows_per_day: float
    arrival_rows_per_day: float
    steady_state_gb: float


def storage(p: PlanInput, c: UnitCosts) -> StorageUse:
    """Steady-state size: rows/day x bytes/row x retention (sessions: one row per user)."""
    load, keep = p.load, p.storage
    users = load.users if load.users is not None else load.prebookings_per_day
    arrivals = load.prebookings_per_day * c.arrivals_per_prebooking
    size = (
        load.prebookings_per_day * c.bytes_per_prebooking * keep.prebooking_retention_days
        + arrivals * c.bytes_per_arrival * keep.arrival_retention_days
        + users * c.bytes_per_session
    )
    return StorageUse(
        prebooking_rows_per_day=round(load.prebookings_per_day, 1),
        arrival_rows_per_day=round(arrivals, 1),
        steady_state_gb=round(size / 1e9, 3),
    )


@dataclass(frozen=True)
class Plan:
    """Every answer of the closed-form model."""

    admission: Admission
    firing: Firing
    throughput: Throughput
    connections: Connections
    qstash: QStashUse
    storage: StorageUse
    monthly_usd: float | None  # QStash + instances + database, where their prices were given
    monthly_note: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def monthly(p: PlanInput, use: QStashUse) -> tuple[float | None, str]:
    """USD per month of what has a price, and a note naming what was left out."""
    prices = p.prices
    parts = {
        "QStash": use.monthly_usd,
        "instances": None
        if prices.instance_month_usd is None
        else prices.instance_month_usd * p.deployment.instances,
        "database": prices.database_month_usd,
    }
    known = {k: v for k, v in parts.items() if v is not None}
    missing = [k for k, v in parts.items() if v is None]
    note = " + ".join(known) or "nothing priced"
    if missing:
        note += f"; not priced: {', '.join(missing)}"
    return (round(sum(known.values()), 2) if known else None), note


def plan(p: PlanInput, c: UnitCosts) -> Plan:
    """The closed-form answers for one load and deployment."""
    adm, armed = admission(p, c)
    use = qstash_use(p, c, adm)
    total, note = monthly(p, use)
    return Plan(
        admission=adm,
        firing=firing(p, c, armed),
        throughput=throughput(p, c),
        connections=connections(p, c, adm),
        qstash=use,
        storage=storage(p, c),
        monthly_usd=total,
        monthly_note=note,
    )
