"""The planner's answer as text or JSON: closed form, simulation, and where they disagree."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from flask_app.capacity.costs import UnitCosts, units
from flask_app.capacity.inputs import PlanInput
from flask_app.capacity.model import Plan
from flask_app.capacity.simulate import CrowdResult


def disagreement(closed: float, simulated: float, unit: str = "%") -> str:
    """How far the simulation is from the closed form: in % of it, or in `unit` if not %."""
    if unit != "%":
        return f"{simulated - closed:+.3g} {unit}"
    if closed == 0:
        return "n/a" if simulated == 0 else "closed form 0"
    return f"{(simulated - closed) / closed * 100:+.0f} %"


def comparison(plan: Plan, sims: Sequence[CrowdResult]) -> list[dict[str, Any]]:
    """Rows: quantity, closed form, simulation median (min-max over runs), disagreement."""
    if not sims:
        return []
    rows = []
    pairs = (
        ("lateness p50 (ms)", plan.firing.p50_ms, [s.p50_ms for s in sims], "%"),
        ("lateness p99 (ms)", plan.firing.p99_ms, [s.p99_ms for s in sims], "%"),
        ("lateness max (ms)", plan.firing.max_ms, [s.max_ms for s in sims], "%"),
        ("last armed (s vs instant)", plan.admission.last_admitted_s,
         [s.last_admitted_s for s in sims], "s"),
        ("stragglers", float(plan.admission.stragglers), [float(s.stragglers) for s in sims], "%"),
        ("busiest leader's shots", float(plan.firing.busiest_leader_shots),
         [float(s.busiest_leader_shots) for s in sims], "%"),
    )  # fmt: skip
    for name, closed, values, unit in pairs:
        median = statistics.median(values)
        rows.append(
            {
                "quantity": name,
                "closed_form": closed,
                "simulation_median": round(median, 3),
                "simulation_min": min(values),
                "simulation_max": max(values),
                "disagreement": disagreement(closed, median, unit),
            }
        )
    return rows


def to_json(p: PlanInput, c: UnitCosts, plan: Plan, sims: Sequence[CrowdResult]) -> dict[str, Any]:
    """Everything, machine-readable."""
    costs = {k: v for k, v in asdict(c).items() if k != "source"}
    return {
        "input": p.model_dump(mode="json"),
        "unit_costs": {
            k: {"value": v, "unit": units()[k], "source": c.source.get(k)} for k, v in costs.items()
        },
        "closed_form": plan.to_json(),
        "simulation": [asdict(s) for s in sims],
        "comparison": comparison(plan, sims),
    }


def _money(value: float | None) -> str:
    return "?" if value is None else f"{value:,.2f}"


def to_text(p: PlanInput, c: UnitCosts, plan: Plan, sims: Sequence[CrowdResult]) -> str:
    """A short human report."""
    a, f, t, db, q, s = (
        plan.admission,
        plan.firing,
        plan.throughput,
        plan.connections,
        plan.qstash,
        plan.storage,
    )
    d = p.deployment
    yes = {True: "yes", False: "NO"}
    lines = [
        f"Load: {p.load.prebookings_per_day:,.0f} prebookings/day; largest crowd "
        f"{a.deliveries:,} in {p.load.crowd_classes:,} classes at one instant",
        f"Deployment: {d.instances} instance(s) x {d.workers_per_instance} worker(s), "
        f"{d.app_cores:g} app cores each ({d.processes} processes)",
        "",
        "Admission (every delivery armed before its leader adopts the class):",
        f"  {yes[a.all_admitted_in_time]}: deliveries spread over {a.spread_s:g} s from "
        f"{a.first_arrival_s:g} s; admission work {a.work_s:g} s at {a.rate_per_s:,.0f}/s; "
        f"last armed at {a.last_admitted_s:+g} s (worst jitter); stragglers {a.stragglers}, "
        f"armed after the instant {a.late}",
        f"  QStash's busiest second carries {a.busiest_second:,} deliveries",
        "Lateness at the box (closed form):",
        f"  p50 {f.p50_ms:g} ms, p99 {f.p99_ms:g} ms, max {f.max_ms:g} ms; "
        f"{f.leader_processes} leader process(es), busiest {f.busiest_leader_shots:,} shots, "
        f"CPU contention x{f.contention:g}; prepare {f.prepare_s_busiest:g} s "
        f"({'fits' if f.prepare_fits else 'OVERRUNS'} the {p.qstash.adopt_lead_s:g} s lead)",
        "Throughput:",
        f"  {t.first_deliveries_per_s:,.0f} first deliveries/s, {t.duplicates_per_s:,.0f} "
        f"duplicates/s; peak hour {t.peak_hour_deliveries_per_s:g}/s "
        f"({t.peak_hour_utilisation:.1%} of the app cores); "
        f"{t.cpu_core_hours_per_day:g} core-hours/day",
        "PostgreSQL connections:",
        f"  pools may open {db.ceiling} of {db.budget} allowed "
        f"({'fits' if db.fits else 'DOES NOT FIT'}); about {db.in_use_at_crowd:g} busy at the "
        f"crowd; pool per process {db.recommended_pool_per_process} suffices; "
        f"PgBouncer {'NEEDED' if db.pgbouncer_needed else 'not needed'}",
        "QStash:",
        f"  {q.messages_per_day:,.0f} messages/day, {q.attempts_per_day:,.0f} delivery "
        f"attempts/day; billed ({q.billing}, busiest day) {q.billed_per_day:,.0f}/day",
        f"  plan: {q.plan or 'none fits (Enterprise)'}, ${_money(q.monthly_usd)}/month "
        f"(billing the other way: ${_money(q.other_billing_monthly_usd)}); "
        f"migration plan's figures: {q.migration_plan} ${_money(q.migration_plan_monthly_usd)}",
    ]  # fmt: skip
    if q.rate_warning:
        lines.append(f"  WARNING: {q.rate_warning}")
    lines += [
        "Database:",
        f"  {s.prebooking_rows_per_day:,.0f} prebookings + {s.arrival_rows_per_day:,.0f} "
        f"arrivals a day; steady state {s.steady_state_gb:g} GB",
        f"Monthly: ${_money(plan.monthly_usd)} ({plan.monthly_note})",
    ]  # fmt: skip
    rows = comparison(plan, sims)
    if rows:
        lines += ["", f"Closed form vs simulation ({len(sims)} runs, random jitter and routing):"]
        for r in rows:
            lines.append(
                f"  {r['quantity']:<28} {r['closed_form']:>10g}  sim {r['simulation_median']:>10g}"
                f" ({r['simulation_min']:g}..{r['simulation_max']:g})  {r['disagreement']}"
            )
    fallbacks = sorted(k for k, v in c.source.items() if v.startswith("fallback"))
    if fallbacks:
        lines += ["", "Unit costs not measured (fallback figures): " + ", ".join(fallbacks)]
    return "\n".join(lines) + "\n"
