"""Compare every delivery path from recorded arrivals: compare(...) -> ParityReport (pure).

The paths are the registered ones (flask_app.paths) plus any name found in the arrivals, so a
new path is compared without a change here. Roles come from the registry: the QStash path is
the one being rolled out; a path with one message per prebooking (QStash, shadow) has
deliveries that can go missing; the other executing paths (cron, a fallback) are what QStash
is compared against. Nothing here touches Flask, the database or the network; time comes in
as `now`. The definitions of every field are in docs/parity.md and in the docstrings below.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from flask_app import paths as registry

#: Actions after which the prebooking has its final answer from this arrival.
EXECUTING_ACTIONS = frozenset({"executed", "confirmed", "failed"})
#: Actions of an arrival that found nothing to do.
IDLE_ACTIONS = frozenset({"lost_claim", "skipped"})
SUCCESS_OUTCOMES = frozenset({"booked", "waitlisted", "already_booked"})
#: The path being rolled out, whose gates the report computes.
CANDIDATE = registry.QSTASH
#: Lateness histogram edges (ms), shared by the report and the Prometheus buckets.
LATENESS_EDGES_MS = (
    -5000.0,
    -2000.0,
    -1000.0,
    -500.0,
    -250.0,
    -100.0,
    0.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2000.0,
    5000.0,
    10000.0,
    30000.0,
    60000.0,
    120000.0,
)
_DLQ = re.compile(r"\bdlq\b|dead[- ]letter", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: The longest window a report covers (a year of arrivals is already a large report).
MAX_WINDOW = timedelta(days=366)


class SinceError(ValueError):
    """A `since` value that is neither a duration (30m, 24h, 7d) nor an ISO-8601 instant."""


@dataclass(frozen=True)
class ArrivalRecord:
    """One stored arrival (the `arrivals` row), as compare() reads it."""

    prebooking_id: str
    path: str
    arrived_at: datetime
    available_at: datetime
    lateness_ms: float
    won: bool
    action: str
    outcome: str | None = None
    fired_at: datetime | None = None
    fire_lateness_ms: float | None = None
    booking_latency_ms: float | None = None
    message_id: str | None = None
    retried: int | None = None


@dataclass(frozen=True)
class PrebookingInfo:
    """What compare() needs about one prebooking."""

    id: str
    available_at: datetime
    status: str
    executed_by: str | None = None
    qstash_message_id: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class Thresholds:
    """The gates between rollout phases; the report prints them next to the verdict."""

    # shadow -> parallel
    min_shadow_deliveries: int = 50
    max_delivery_p99_lateness_ms: float = 0.0
    # parallel -> qstash-only
    min_parallel_executions: int = 100
    min_qstash_win_share: float = 0.99
    max_qstash_fire_p99_lateness_ms: float = 1000.0
    #: QStash's booking success rate may trail cron's by this much (noise, not the path).
    success_rate_tolerance: float = 0.02
    #: Below this many cron executions, cron's success rate is too noisy to compare against.
    min_cron_executions_for_rate: int = 20
    # both gates
    max_missing_deliveries: int = 0
    max_dlq_entries: int = 0
    #: A QStash delivery not seen this long after the window opened counts as missing.
    delivery_grace: timedelta = timedelta(minutes=10)


@dataclass(frozen=True)
class Percentiles:
    """p50/p95/p99/max of a sample (linear interpolation between order statistics)."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None


@dataclass(frozen=True)
class PathStats:
    """How one path performed in the window."""

    path: str
    arrivals: int
    executions: int
    released: int
    lost_race: int
    skipped: int
    observed: int
    duplicates_suppressed: int
    redeliveries: int
    successes: int
    success_rate: float | None
    arrival_lateness: Percentiles
    fire_lateness: Percentiles
    booking_latency: Percentiles
    histogram: list[int]


@dataclass(frozen=True)
class PrebookingRow:
    """Per prebooking: who executed it, and when each path first arrived."""

    id: str
    available_at: datetime
    status: str
    executed_by: str | None
    outcome: str | None
    first_path: str | None
    first_lateness_ms: dict[str, float]
    arrivals: int


@dataclass(frozen=True)
class Check:
    """One verdict condition: what was measured against which threshold."""

    name: str
    passed: bool
    value: str
    threshold: str


@dataclass(frozen=True)
class Gate:
    """A rollout step and whether every one of its checks passes."""

    name: str
    checks: list[Check]

    @property
    def passed(self) -> bool:
        """Every check passes."""
        return all(check.passed for check in self.checks)


@dataclass(frozen=True)
class WinBucket:
    """Executions per path in one time bucket (for the wins-over-time chart)."""

    start: datetime
    wins: dict[str, int]


@dataclass(frozen=True)
class ParityReport:
    """The comparison of the paths over [since, now]."""

    generated_at: datetime
    since: datetime
    thresholds: Thresholds
    paths: dict[str, PathStats]  # every compared path, in column order
    executing: list[str]  # the paths whose arrivals execute (the others only observe)
    incumbents: list[str]  # executing paths QStash is compared against (cron, a fallback)
    prebookings_due: int
    executed_by: dict[str, int]
    qstash_win_share: float | None
    missing_deliveries: list[str]
    missing_covered_by_cron: list[str]
    cron_beatable: list[str]
    cron_beatable_lead_ms: Percentiles
    dlq_entries: list[str]
    gates: list[Gate]
    verdict: str
    bucket: timedelta
    wins_over_time: list[WinBucket]
    prebookings: list[PrebookingRow] = field(default_factory=list)


def percentiles(values: Iterable[float]) -> Percentiles:
    """p50/p95/p99/max with linear interpolation (numpy's default method)."""
    data = sorted(values)
    if not data:
        return Percentiles(0, None, None, None, None)
    return Percentiles(
        len(data), _quantile(data, 0.5), _quantile(data, 0.95), _quantile(data, 0.99), data[-1]
    )


def _quantile(data: Sequence[float], q: float) -> float:
    pos = (len(data) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def histogram(values: Iterable[float], edges: Sequence[float] = LATENESS_EDGES_MS) -> list[int]:
    """Counts per bin: (-inf, e0], (e0, e1], ..., (e_last, +inf) — len(edges) + 1 bins."""
    counts = [0] * (len(edges) + 1)
    for value in values:
        counts[_bin(value, edges)] += 1
    return counts


def _bin(value: float, edges: Sequence[float]) -> int:
    for index, edge in enumerate(edges):
        if value <= edge:
            return index
    return len(edges)


def is_dlq_failure(info: PrebookingInfo) -> bool:
    """Failed by the DLQ reconciler: failed, and its reason names the DLQ / dead letter queue."""
    return info.status == "failed" and bool(_DLQ.search(info.error_message or ""))


def parse_since(text: str, now: datetime) -> datetime:
    """`30m`, `24h`, `7d`, `2w` (before now) or an ISO-8601 instant with an offset.

    Raises:
        SinceError: anything else, or an instant without offset or in the future.
    """
    match = _DURATION.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        span = timedelta(**{_UNITS[unit]: amount}) if amount <= 10**6 else MAX_WINDOW * 2
        if span > MAX_WINDOW:
            raise SinceError(f"since reaches back more than {MAX_WINDOW.days} days: {text!r}")
        return now - span
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SinceError(
            f"since must be a duration like 30m, 24h or 7d, or an ISO-8601 instant with offset; "
            f"got {text!r}"
        ) from None
    if at.tzinfo is None:
        raise SinceError(f"since needs a UTC offset (e.g. {text}+00:00); got {text!r}")
    if at > now:
        raise SinceError(f"since is in the future: {text!r}")
    if now - at > MAX_WINDOW:
        raise SinceError(f"since reaches back more than {MAX_WINDOW.days} days: {text!r}")
    return at.astimezone(UTC)


def compare(
    arrivals: Iterable[ArrivalRecord],
    prebookings: Iterable[PrebookingInfo],
    now: datetime,
    since: datetime,
    thresholds: Thresholds | None = None,
) -> ParityReport:
    """Compare the paths over the arrivals in [since, now] and the prebookings due then."""
    limits = thresholds or Thresholds()
    seen = sorted((a for a in arrivals if since <= a.arrived_at <= now), key=lambda a: a.arrived_at)
    infos = {p.id: p for p in prebookings}
    due = [p for p in infos.values() if since <= p.available_at <= now]
    by_prebooking: dict[str, list[ArrivalRecord]] = defaultdict(list)
    for arrival in seen:
        by_prebooking[arrival.prebooking_id].append(arrival)
    roles = Roles.of(CANDIDATE, (a.path for a in seen))
    winners = _winners(by_prebooking, infos)
    paths = {path: _path_stats(path, seen, by_prebooking, winners) for path in roles.columns}
    missing = _missing_deliveries(due, by_prebooking, now, limits.delivery_grace, roles)
    beatable, leads = _cron_beatable(by_prebooking, roles)
    executed = _executed_by(seen, roles)
    share = _share(executed[CANDIDATE], sum(executed[p] for p in roles.executing))
    dlq = sorted(p.id for p in due if is_dlq_failure(p))
    gates = _gates(paths, len(missing), len(dlq), share, limits, roles)
    bucket = _bucket_size(now - since)
    covered = roles.incumbents
    return ParityReport(
        generated_at=now,
        since=since,
        thresholds=limits,
        paths=paths,
        executing=roles.executing,
        incumbents=roles.incumbents,
        prebookings_due=len(due),
        executed_by=executed,
        qstash_win_share=share,
        missing_deliveries=missing,
        missing_covered_by_cron=[i for i in missing if infos[i].executed_by in covered],
        cron_beatable=beatable,
        cron_beatable_lead_ms=percentiles(leads),
        dlq_entries=dlq,
        gates=gates,
        verdict=_verdict(gates),
        bucket=bucket,
        wins_over_time=_wins_over_time(seen, since, now, bucket, roles),
        prebookings=_rows(infos, by_prebooking, due),
    )


@dataclass(frozen=True)
class Roles:
    """Which compared path plays which part, from the registry (unregistered names execute)."""

    candidate: str
    columns: list[str]  # incumbents, then the candidate's side, then observers
    executing: list[str]
    incumbents: list[str]
    deliveries: frozenset[str]  # one message per prebooking: their arrivals can go missing

    @classmethod
    def of(cls, candidate: str, seen: Iterable[str]) -> Roles:
        """The registered paths and every name seen, each in its part."""
        known = registry.known([candidate, *seen])
        ordered = sorted(known, key=lambda p: (not p.executes, p.per_message, p.name))
        return cls(
            candidate=candidate,
            columns=[p.name for p in ordered],
            executing=[p.name for p in ordered if p.executes],
            incumbents=[p.name for p in ordered if p.executes and not p.per_message],
            deliveries=frozenset(p.name for p in ordered if p.per_message),
        )


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _is_execution(arrival: ArrivalRecord) -> bool:
    return arrival.won and arrival.action in EXECUTING_ACTIONS


def _executed_by(seen: Sequence[ArrivalRecord], roles: Roles) -> dict[str, int]:
    counts = {path: 0 for path in roles.columns}
    for arrival in seen:
        if _is_execution(arrival):
            counts[arrival.path] = counts.get(arrival.path, 0) + 1
    return counts


def _first_arrivals(
    path: str, by_prebooking: dict[str, list[ArrivalRecord]]
) -> list[ArrivalRecord]:
    firsts = []
    for group in by_prebooking.values():
        mine = [a for a in group if a.path == path]
        if mine:
            firsts.append(mine[0])
    return firsts


def _winners(
    by_prebooking: dict[str, list[ArrivalRecord]], infos: dict[str, PrebookingInfo]
) -> dict[str, str | None]:
    """Per prebooking, the path that executed it (from its arrivals, else from the row)."""
    winners: dict[str, str | None] = {}
    for prebooking_id, group in by_prebooking.items():
        executed = next((a.path for a in group if _is_execution(a)), None)
        row = infos.get(prebooking_id)
        winners[prebooking_id] = executed or (row.executed_by if row else None)
    return winners


def _path_stats(
    path: str,
    seen: Sequence[ArrivalRecord],
    by_prebooking: dict[str, list[ArrivalRecord]],
    winners: dict[str, str | None],
) -> PathStats:
    mine = [a for a in seen if a.path == path]
    executions = [a for a in mine if _is_execution(a)]
    successes = sum(1 for a in executions if a.outcome in SUCCESS_OUTCOMES)
    firsts = _first_arrivals(path, by_prebooking)
    return PathStats(
        path=path,
        arrivals=len(mine),
        executions=len(executions),
        released=sum(1 for a in mine if a.won and a.action == "released"),
        lost_race=_lost_race(path, by_prebooking, winners),
        skipped=sum(1 for a in mine if a.action == "skipped"),
        observed=sum(1 for a in mine if a.action == "shadow"),
        duplicates_suppressed=_duplicates(path, by_prebooking),
        redeliveries=_redeliveries(mine),
        successes=successes,
        success_rate=_share(successes, len(executions)),
        arrival_lateness=percentiles(a.lateness_ms for a in firsts),
        fire_lateness=percentiles(
            a.fire_lateness_ms for a in executions if a.fire_lateness_ms is not None
        ),
        booking_latency=percentiles(
            a.booking_latency_ms for a in executions if a.booking_latency_ms is not None
        ),
        histogram=histogram(a.lateness_ms for a in firsts),
    )


def _lost_race(
    path: str, by_prebooking: dict[str, list[ArrivalRecord]], winners: dict[str, str | None]
) -> int:
    """First arrivals of `path` that lost the claim to the other path."""
    count = 0
    for prebooking_id, group in by_prebooking.items():
        first = next((a for a in group if a.path == path), None)
        winner = winners.get(prebooking_id)
        if first is not None and first.action == "lost_claim" and winner not in (None, path):
            count += 1
    return count


def _duplicates(path: str, by_prebooking: dict[str, list[ArrivalRecord]]) -> int:
    """Arrivals of `path` after its first one for a prebooking that did nothing."""
    count = 0
    for group in by_prebooking.values():
        mine = [a for a in group if a.path == path]
        count += sum(1 for a in mine[1:] if a.action in IDLE_ACTIONS)
    return count


def _redeliveries(mine: Sequence[ArrivalRecord]) -> int:
    """Arrivals QStash marked as retries, or that repeat a message id already seen."""
    seen_ids: set[str] = set()
    count = 0
    for arrival in mine:
        repeated = arrival.message_id is not None and arrival.message_id in seen_ids
        if (arrival.retried or 0) > 0 or repeated:
            count += 1
        if arrival.message_id is not None:
            seen_ids.add(arrival.message_id)
    return count


def _missing_deliveries(
    due: Sequence[PrebookingInfo],
    by_prebooking: dict[str, list[ArrivalRecord]],
    now: datetime,
    grace: timedelta,
    roles: Roles,
) -> list[str]:
    """Published prebookings (not cancelled) past the grace with no arrival of a path that
    delivers one message per prebooking (QStash, shadow)."""
    return sorted(
        p.id
        for p in due
        if p.qstash_message_id
        and p.status != "cancelled"
        and p.available_at + grace <= now
        and not any(a.path in roles.deliveries for a in by_prebooking.get(p.id, []))
    )


def _cron_beatable(
    by_prebooking: dict[str, list[ArrivalRecord]], roles: Roles
) -> tuple[list[str], list[float]]:
    """Prebookings executed by another path (cron, ...) whose first QStash/shadow arrival came
    before that path's winning one.

    Returns the ids and, for each, the lead in ms (how much earlier QStash was there).
    """
    ids, leads = [], []
    for prebooking_id, group in by_prebooking.items():
        won = next((a for a in group if a.path in roles.incumbents and _is_execution(a)), None)
        delivery = next((a for a in group if a.path in roles.deliveries), None)
        if won is not None and delivery is not None and delivery.arrived_at < won.arrived_at:
            ids.append(prebooking_id)
            leads.append((won.arrived_at - delivery.arrived_at) / timedelta(milliseconds=1))
    return sorted(ids), leads


def _gates(
    paths: dict[str, PathStats],
    missing: int,
    dlq: int,
    share: float | None,
    limits: Thresholds,
    roles: Roles,
) -> list[Gate]:
    return [
        _shadow_gate(paths, missing, dlq, limits, roles),
        _qstash_gate(paths, missing, dlq, share, limits, roles),
    ]


def _delivery_sample(paths: dict[str, PathStats], roles: Roles) -> tuple[int, float | None]:
    """Deliveries (first per prebooking, qstash or shadow) and the worse of their p99s."""
    stats = [paths[p].arrival_lateness for p in roles.columns if p in roles.deliveries]
    p99s = [s.p99 for s in stats if s.p99 is not None]
    return sum(s.count for s in stats), max(p99s) if p99s else None


def _shadow_gate(
    paths: dict[str, PathStats], missing: int, dlq: int, limits: Thresholds, roles: Roles
) -> Gate:
    count, p99 = _delivery_sample(paths, roles)
    return Gate(
        "shadow -> parallel",
        [
            Check("QStash deliveries seen", count >= limits.min_shadow_deliveries,
                  str(count), f">= {limits.min_shadow_deliveries}"),
            Check("delivery p99 lateness vs opening",
                  p99 is not None and p99 <= limits.max_delivery_p99_lateness_ms,
                  _ms(p99), f"<= {_ms(limits.max_delivery_p99_lateness_ms)}"),
            _missing_check(missing, limits),
            _dlq_check(dlq, limits),
        ],
    )  # fmt: skip


def _qstash_gate(
    paths: dict[str, PathStats],
    missing: int,
    dlq: int,
    share: float | None,
    limits: Thresholds,
    roles: Roles,
) -> Gate:
    qstash = paths[roles.candidate]
    others = [paths[p] for p in roles.incumbents]
    samples = sum(paths[p].executions for p in roles.executing)
    fire_p99 = qstash.fire_lateness.p99
    return Gate(
        "parallel -> qstash-only",
        [
            Check("executions in parallel", samples >= limits.min_parallel_executions,
                  str(samples), f">= {limits.min_parallel_executions}"),
            Check("QStash share of executions",
                  share is not None and share >= limits.min_qstash_win_share,
                  _pct(share), f">= {_pct(limits.min_qstash_win_share)}"),
            _success_check(qstash, others, limits),
            Check("QStash fire p99 lateness", fire_p99 is not None
                  and fire_p99 <= limits.max_qstash_fire_p99_lateness_ms,
                  _ms(fire_p99), f"<= {_ms(limits.max_qstash_fire_p99_lateness_ms)}"),
            _missing_check(missing, limits),
            _dlq_check(dlq, limits),
        ],
    )  # fmt: skip


def _success_check(qstash: PathStats, others: Sequence[PathStats], limits: Thresholds) -> Check:
    """QStash books as often as each other executing path (within the tolerance), once that
    path has enough samples."""
    names = ", ".join(o.path for o in others) or "the other paths"
    rates = ", ".join(f"{_pct(o.success_rate)} ({o.path} n={o.executions})" for o in others)
    value = f"{_pct(qstash.success_rate)} vs {rates or 'n/a'}"
    threshold = (
        f">= {names}'s - {limits.success_rate_tolerance * 100:g} pts "
        f"({names} n >= {limits.min_cron_executions_for_rate})"
    )
    name = f"QStash success rate vs {names}"
    if qstash.success_rate is None:
        return Check(name, False, value, threshold)
    passed = all(
        qstash.success_rate >= o.success_rate - limits.success_rate_tolerance
        for o in others
        if o.success_rate is not None and o.executions >= limits.min_cron_executions_for_rate
    )
    return Check(name, passed, value, threshold)


def _missing_check(missing: int, limits: Thresholds) -> Check:
    return Check(
        "QStash deliveries that never came",
        missing <= limits.max_missing_deliveries,
        str(missing),
        f"<= {limits.max_missing_deliveries}",
    )


def _dlq_check(dlq: int, limits: Thresholds) -> Check:
    return Check(
        "DLQ entries", dlq <= limits.max_dlq_entries, str(dlq), f"<= {limits.max_dlq_entries}"
    )


def _verdict(gates: Sequence[Gate]) -> str:
    """One line: the furthest rollout step whose gate (and every earlier one) passes."""
    ready = None
    for gate in gates:
        if not gate.passed:
            break
        ready = gate
    if ready is gates[-1]:
        return f"READY: every gate passes; safe to go {ready.name.split(' -> ')[1]}"
    failing = gates[0] if ready is None else gates[gates.index(ready) + 1]
    names = ", ".join(c.name for c in failing.checks if not c.passed)
    done = f"safe to go {ready.name.split(' -> ')[1]}; " if ready else ""
    return f"NOT READY for {failing.name}: {done}failing: {names}"


def _bucket_size(span: timedelta) -> timedelta:
    """Chart bucket width: about 24 to 100 buckets over the window."""
    for width in (
        timedelta(minutes=5),
        timedelta(minutes=15),
        timedelta(hours=1),
        timedelta(hours=6),
    ):
        if span <= width * 100:
            return width
    # Whole days, as many as keep the chart at 100 buckets or fewer, however long the window.
    return timedelta(days=max(1, math.ceil(span / timedelta(days=100))))


def _floor(at: datetime, width: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((at - epoch) // width) * width


def _wins_over_time(
    seen: Sequence[ArrivalRecord], since: datetime, now: datetime, width: timedelta, roles: Roles
) -> list[WinBucket]:
    buckets: dict[datetime, dict[str, int]] = {}
    start = _floor(since, width)
    while start <= now:
        buckets[start] = dict.fromkeys(roles.executing, 0)
        start += width
    for arrival in seen:
        if _is_execution(arrival):
            at = _floor(arrival.arrived_at, width)
            wins = buckets.setdefault(at, dict.fromkeys(roles.executing, 0))
            wins[arrival.path] = wins.get(arrival.path, 0) + 1
    return [WinBucket(at, wins) for at, wins in sorted(buckets.items())]


def _rows(
    infos: dict[str, PrebookingInfo],
    by_prebooking: dict[str, list[ArrivalRecord]],
    due: Sequence[PrebookingInfo],
) -> list[PrebookingRow]:
    ids = {p.id for p in due} | set(by_prebooking)
    rows = [_row(infos.get(i), i, by_prebooking.get(i, [])) for i in ids]
    return sorted(rows, key=lambda r: (r.available_at, r.id), reverse=True)


def _row(
    info: PrebookingInfo | None, prebooking_id: str, group: list[ArrivalRecord]
) -> PrebookingRow:
    firsts: dict[str, float] = {}
    for arrival in group:
        firsts.setdefault(arrival.path, arrival.lateness_ms)
    executed = next((a for a in group if _is_execution(a)), None)
    available_at = info.available_at if info else group[0].available_at
    return PrebookingRow(
        id=prebooking_id,
        available_at=available_at,
        status=info.status if info else "unknown",
        executed_by=info.executed_by if info else (executed.path if executed else None),
        outcome=executed.outcome if executed else None,
        first_path=group[0].path if group else None,
        first_lateness_ms=firsts,
        arrivals=len(group),
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"
