"""The measured-vs-predicted table of docs/capacity.md, from the model and the bench outputs.

Predictions come from `flask_app.capacity` (closed form and simulation) on the unit costs in
bench/results/costs.json; measured figures from bench/results/capacity_measured.json, each
with the code and date it comes from. `--add` files a benchmark's JSON output under a scenario
(bench/precision_qstash.py, bench/precision.py --path qstash, bench/webhook_throughput.py,
the scale-out harness, or {"runs": [{"scenario": ..., "p99_ms": ...}]}); the table between the
markers of docs/capacity.md is then rewritten.

    python bench/capacity_table.py                     # rewrite the table from what is filed
    python bench/capacity_table.py --add out.json --scenario V5 --code "main 1a2b3c4"
    python bench/capacity_table.py --print             # the table on stdout only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_app.capacity import costs, model, simulate  # noqa: E402
from flask_app.capacity.inputs import PlanInput  # noqa: E402

MEASURED = ROOT / "bench" / "results" / "capacity_measured.json"
COSTS = ROOT / "bench" / "results" / "costs.json"
DOC = ROOT / "docs" / "capacity.md"
START, END = "<!-- capacity-table:start -->", "<!-- capacity-table:end -->"
COSTS_START, COSTS_END = "<!-- capacity-costs:start -->", "<!-- capacity-costs:end -->"


@dataclass(frozen=True)
class Scenario:
    """One benchmark scenario on this 2-core machine."""

    id: str
    what: str
    instances: int
    workers: int
    n: int
    classes: int
    throughput: bool = False

    def inputs(self) -> PlanInput:
        # Everything shares this machine's 2 cores: two instances get one core each; PostgreSQL
        # runs beside them; qstash_dev delivers within milliseconds of each whole second.
        return PlanInput.model_validate(
            {
                "load": {
                    "prebookings_per_day": 1000,
                    "largest_crowd": self.n,
                    "crowd_classes": self.classes,
                },
                "deployment": {
                    "instances": self.instances,
                    "workers_per_instance": self.workers,
                    "cores_per_instance": 2 / self.instances,
                    "db_colocated": True,
                },
                "qstash": {"jitter_s": 0.02},
            }
        )


SCENARIOS = (
    Scenario("V0", "50 in one class", 1, 1, 50, 1),
    Scenario("V1", "200 in one class", 1, 1, 200, 1),
    Scenario("V2", "200 in one class", 1, 2, 200, 1),
    Scenario("V3", "200 in one class, PostgreSQL", 1, 4, 200, 1),
    Scenario("V4", "1,000 in one class", 1, 1, 1000, 1),
    Scenario("V5", "1,000 across 20 classes", 1, 4, 1000, 20),
    Scenario("V6", "5,000 across 100 classes", 2, 4, 5000, 100),
    Scenario("V7", "1,000 across 20 classes", 1, 1, 1000, 20),
    Scenario("W1", "webhook throughput", 1, 1, 500, 500, throughput=True),
    Scenario("W2", "webhook throughput", 1, 2, 500, 500, throughput=True),
    Scenario("W4", "webhook throughput", 1, 4, 500, 500, throughput=True),
    Scenario("W8", "webhook throughput", 2, 4, 500, 500, throughput=True),
)
BY_ID = {s.id: s for s in SCENARIOS}


def load_costs() -> costs.UnitCosts:
    data = json.loads(COSTS.read_text()) if COSTS.exists() else None
    return costs.from_costs_json(data)


def runs_from(data: Any, scenario: Scenario, code: str, source: str) -> list[dict[str, Any]]:
    """Measured runs from one benchmark output, whatever script wrote it."""
    stamp = {"code": code, "source": source, "measured_at": datetime.now(UTC).isoformat()[:16]}
    if isinstance(data, dict) and "runs" in data:
        return [stamp | r for r in data["runs"] if r.get("scenario", scenario.id) == scenario.id]
    if isinstance(data, dict) and "first_deliveries" in data:  # webhook_throughput.py
        load = data.get("settings", {}).get("loadavg_1m")
        return [
            stamp
            | {
                "first_per_s": data["first_deliveries"]["per_s"],
                "duplicates_per_s": data["duplicate_deliveries"]["per_s"],
                "loadavg_1m": load,
            }
        ]
    results = data.get("results", []) if isinstance(data, dict) else data
    out = []
    for r in results:  # precision_qstash.py / precision.py / bench/scaleout.py
        if "app" in r:  # bench/scaleout.py: {"app": {"prebookings", "lateness_ms", ...}}
            app = r["app"]
            n, lateness = app.get("prebookings", scenario.n), app.get("lateness_ms", {})
            arrived = n - app.get("never_sent", 0)
            inverted, load = app.get("fifo_inversions"), (r.get("loadavg_after") or [None])[0]
        else:
            n, lateness = r.get("n", scenario.n), r.get("vs_available_at_ms") or r
            arrived, inverted = r.get("arrived", n), r.get("fifo_inversions")
            load = r.get("loadavg_1m_after") or r.get("loadavg_1m")
        if n != scenario.n:
            continue
        out.append(
            stamp
            | {
                "p50_ms": lateness.get("p50", lateness.get("p50_ms")),
                "p99_ms": lateness.get("p99", lateness.get("p99_ms")),
                "max_ms": lateness.get("max", lateness.get("max_ms")),
                "all_sent": arrived >= n,
                "fifo_inversions": inverted,
                "loadavg_1m": load,
            }
        )
    return out


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def error(predicted: float, measured: list[float]) -> str:
    """Predicted against the median measured run, in % of the measured."""
    if not measured:
        return "-"
    median = statistics.median(measured)
    return f"{(predicted - median) / median * 100:+.0f} %" if median else "-"


def measured_cell(runs: list[dict[str, Any]], key: str) -> str:
    values = [r for r in runs if r.get(key) is not None]
    if not values:
        return "not measured yet"
    figures = " / ".join(fmt(r[key]) for r in values)
    codes = sorted({r["code"] for r in values})
    loads = [r["loadavg_1m"] for r in values if r.get("loadavg_1m") is not None]
    load = f", load {min(loads):g}-{max(loads):g}" if loads else ""
    dates = sorted({str(r.get("measured_at", "?"))[:10] for r in values})
    return f"{figures} ({'; '.join(codes)}, {', '.join(dates)}{load})"


def table(filed: list[dict[str, Any]], unit: costs.UnitCosts, runs: int) -> str:
    """The two Markdown tables: crowds, then throughput."""
    crowd = [
        "| id | scenario | instances x workers | predicted: all armed in time | predicted p99 "
        "ms (closed form) | predicted p99 ms (simulation, median of runs) | measured p99 ms "
        "(code, date, load) | error (closed form vs measured median) |",
        "| --- " * 8 + "|",
    ]
    through = [
        "| id | instances x workers | predicted first deliveries/s | measured first/s "
        "(code, date, load) | error | predicted duplicates/s | measured duplicates/s | error |",
        "| --- " * 8 + "|",
    ]
    for s in SCENARIOS:
        mine = [r for r in filed if r.get("scenario") == s.id]
        answer = model.plan(s.inputs(), unit)
        setup = f"{s.instances} x {s.workers}"
        if s.throughput:
            first = [r["first_per_s"] for r in mine if r.get("first_per_s") is not None]
            dup = [r["duplicates_per_s"] for r in mine if r.get("duplicates_per_s") is not None]
            t = answer.throughput
            through.append(
                f"| {s.id} | {setup} | {fmt(t.first_deliveries_per_s, 0)} | "
                f"{measured_cell(mine, 'first_per_s')} | {error(t.first_deliveries_per_s, first)} "
                f"| {fmt(t.duplicates_per_s, 0)} | {measured_cell(mine, 'duplicates_per_s')} | "
                f"{error(t.duplicates_per_s, dup)} |"
            )
            continue
        sims = simulate.simulate(s.inputs(), unit, runs=runs)
        sim_p99 = statistics.median(x.p99_ms for x in sims)
        p99s = [r["p99_ms"] for r in mine if r.get("p99_ms") is not None]
        in_time = "yes" if answer.admission.all_admitted_in_time else "NO"
        crowd.append(
            f"| {s.id} | {s.what} | {setup} | {in_time} "
            f"| {fmt(answer.firing.p99_ms)} | {fmt(sim_p99)} | {measured_cell(mine, 'p99_ms')} | "
            f"{error(answer.firing.p99_ms, p99s)} |"
        )  # fmt: skip
    meta = json.loads(COSTS.read_text()) if COSTS.exists() else {}
    entry = meta.get("entries", {}).get("crowd.shot_interval_ms", {})
    load = entry.get("machine", {}).get("loadavg_1m_before")
    note = (
        f"Predictions: unit costs of bench/results/costs.json (commit "
        f"{entry.get('commit', '?')}, {entry.get('measured_at', '?')}, 1-minute load "
        f"{fmt(load)} at its crowd pass); deployment as the bench "
        f"runs here: 2 cores shared by everything (two instances: one core each), PostgreSQL "
        f"colocated, qstash_dev jitter 20 ms; {runs} simulated crowds per row. Table written "
        f"{datetime.now(UTC).isoformat(timespec='minutes')} by bench/capacity_table.py."
    )
    return "\n".join([note, "", *crowd, "", *through])


def costs_table() -> str:
    """Every figure of costs.json: value, unit, pass, commit, date, load before/after."""
    if not COSTS.exists():
        return "bench/results/costs.json does not exist yet: run `make costs`."
    meta = json.loads(COSTS.read_text())
    lines = [
        "| figure | value | unit | measured (commit, UTC) | 1-minute load before/after |",
        "| --- " * 5 + "|",
    ]
    for name, e in meta["entries"].items():
        m = e.get("machine", {})
        dirty = "+local changes" if e.get("commit_dirty") else ""
        lines.append(
            f"| `{name}` | {e['value']:,.4g} | {e['unit']} | {e['commit']}{dirty}, "
            f"{e['measured_at']} | {fmt(m.get('loadavg_1m_before'))} / "
            f"{fmt(m.get('loadavg_1m_after'))} |"
        )
    machine = next(iter(meta["entries"].values()), {}).get("machine", {})
    head = (
        f"Machine: {machine.get('cpus')} CPUs ({machine.get('cpu_model')}), "
        f"{machine.get('platform')}, Python {machine.get('python')}. Command: "
        f"`{next(iter(meta['entries'].values()), {}).get('command')}`."
    )
    return "\n".join([head, "", *lines])


def replace_between(doc: str, start: str, end: str, text: str) -> str:
    if start not in doc or end not in doc:
        raise SystemExit(f"{DOC} lacks the {start} / {end} markers")
    head, rest = doc.split(start, 1)
    _old, tail = rest.split(end, 1)
    return f"{head}{start}\n{text}\n{end}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--add", type=Path, help="a benchmark's JSON output to file")
    parser.add_argument("--scenario", choices=sorted(BY_ID), help="which scenario --add is")
    parser.add_argument("--code", help="the commit/branch the --add figures were measured on")
    parser.add_argument("--runs", type=int, default=5, help="simulated crowds per scenario")
    parser.add_argument("--print", action="store_true", help="print the table, write nothing")
    args = parser.parse_args()
    filed = json.loads(MEASURED.read_text())
    if args.add:
        if not (args.scenario and args.code):
            parser.error("--add needs --scenario and --code")
        data = json.loads(args.add.read_text())
        new = runs_from(data, BY_ID[args.scenario], args.code, str(args.add))
        for run in new:
            run["scenario"] = args.scenario
        filed["runs"] += new
        MEASURED.write_text(json.dumps(filed, indent=2) + "\n")
        print(f"filed {len(new)} run(s) under {args.scenario}", file=sys.stderr)
    text = table(filed["runs"], load_costs(), args.runs)
    if args.print:
        print(text + "\n\n" + costs_table())
        return 0
    doc = replace_between(DOC.read_text(), START, END, text)
    doc = replace_between(doc, COSTS_START, COSTS_END, costs_table())
    DOC.write_text(doc)
    print(f"rewrote the tables in {DOC} (load {os.getloadavg()[0]:.2f})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
