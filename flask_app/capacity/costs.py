"""The measured unit costs the model runs on, read from `bench/results/costs.json`.

`bench/costs.py` (`make costs`) measures them on the current code; this module maps its
entries to the few numbers the model needs and says, for each, where it came from. A figure
the file lacks falls back to the last one published in bench/README.md (marked "fallback").
Pure: takes the parsed JSON, does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from flask_app.capacity.inputs import CostOverrides

# (model field, costs.json entry, fallback, unit). Fallbacks: bench/README.md, main at 5c3ea17
# (py-spy profile of 1,000 deliveries, webhook throughput, cost.py), 2026-11-25.
_SOURCES: tuple[tuple[str, str, float, str], ...] = (
    ("admission_ms", "crowd.admission_cpu_ms", 3.7, "ms app CPU per delivery before adoption"),
    ("admission_db_ms", "crowd.admission_db_cpu_ms", 1.0, "ms PostgreSQL CPU per delivery"),
    ("prepare_ms", "crowd.prepare_cpu_ms", 0.03, "ms app CPU per prebooking in the last s"),
    ("shot_ms", "crowd.shot_interval_ms", 0.045, "ms between consecutive writes at the instant"),
    ("record_ms", "crowd.record_cpu_ms", 2.35, "ms app CPU per prebooking after the instant"),
    ("base_latency_ms", "crowd.first_shot_ms", 0.12, "ms from the instant to the first arrival"),
    ("duplicate_ms", "webhook.duplicate_cpu_ms", 2.0, "ms app CPU per duplicate delivery"),
    ("duplicate_db_ms", "webhook.duplicate_db_cpu_ms", 0.5, "ms PostgreSQL CPU per duplicate"),
    ("create_ms", "create.cpu_ms", 5.0, "ms app CPU per POST /api/prebookings"),
    ("cron_booking_ms", "cron.booking_cpu_ms", 6.0, "ms app CPU per cron-tick booking"),
    ("statements_per_delivery", "webhook.statements_per_first_delivery", 10.0, "statements"),
    ("messages_per_prebooking", "qstash.messages_per_prebooking", 1.0, "QStash messages"),
    ("attempts_per_prebooking", "qstash.attempts_per_prebooking", 1.07, "delivery attempts"),
    ("schedule_messages_per_day", "qstash.schedule_messages_per_day", 289.0, "messages/day"),
    ("active_schedules", "qstash.active_schedules", 3.0, "schedules"),
    ("bytes_per_prebooking", "db.bytes_per_prebooking", 1000.0, "bytes incl. indexes"),
    ("bytes_per_arrival", "db.bytes_per_arrival", 450.0, "bytes incl. indexes"),
    ("bytes_per_session", "db.bytes_per_session", 600.0, "bytes incl. indexes"),
    ("arrivals_per_prebooking", "db.arrivals_per_prebooking", 1.1, "arrival rows"),
)


@dataclass(frozen=True)
class UnitCosts:
    """Unit costs (ms of CPU unless named otherwise) and where each came from."""

    admission_ms: float = 3.7
    admission_db_ms: float = 1.0
    prepare_ms: float = 0.03
    shot_ms: float = 0.045
    record_ms: float = 2.35
    base_latency_ms: float = 0.12
    duplicate_ms: float = 2.0
    duplicate_db_ms: float = 0.5
    create_ms: float = 5.0
    cron_booking_ms: float = 6.0
    statements_per_delivery: float = 10.0
    messages_per_prebooking: float = 1.0
    attempts_per_prebooking: float = 1.07
    schedule_messages_per_day: float = 289.0
    active_schedules: float = 3.0
    bytes_per_prebooking: float = 1000.0
    bytes_per_arrival: float = 450.0
    bytes_per_session: float = 600.0
    arrivals_per_prebooking: float = 1.1
    source: Mapping[str, str] = field(default_factory=dict, compare=False)


def from_costs_json(data: Mapping[str, Any] | None) -> UnitCosts:
    """The model's unit costs from a parsed costs.json (None: every figure a fallback)."""
    entries: Mapping[str, Any] = (data or {}).get("entries", {})
    values: dict[str, float] = {}
    source: dict[str, str] = {}
    for name, key, fallback, _unit in _SOURCES:
        entry = entries.get(key)
        if isinstance(entry, Mapping) and isinstance(entry.get("value"), int | float):
            values[name] = float(entry["value"])
            source[name] = f"{key} ({entry.get('commit', '?')}, {entry.get('measured_at', '?')})"
        else:
            values[name] = fallback
            source[name] = "fallback: bench/README.md figure (5c3ea17)"
    return UnitCosts(**values, source=source)


def with_overrides(costs: UnitCosts, overrides: CostOverrides) -> UnitCosts:
    """`costs` with every unit cost the input states replaced (and its source saying so)."""
    given = {k: v for k, v in overrides.model_dump().items() if v is not None}
    if not given:
        return costs
    source = dict(costs.source) | {name: "input (costs section)" for name in given}
    return replace(costs, **given, source=source)


def units() -> dict[str, str]:
    """Each model cost's unit, for the report."""
    return {name: unit for name, _key, _fallback, unit in _SOURCES}
