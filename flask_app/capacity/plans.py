"""QStash plans (limits and prices, with their source) and the cheapest one that fits a load."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

DAYS_PER_MONTH = 30.44  # 365.25 / 12


@dataclass(frozen=True)
class Plan:
    """One QStash plan's limits and prices (None: no limit stated)."""

    name: str
    monthly_usd: float
    usd_per_100k_messages: float
    max_messages_per_day: float | None
    max_active_schedules: int | None
    max_delay_days: float | None
    usd_per_extra_schedule: float = 0.0
    max_requests_per_second: float | None = None

    def refusal(self, billed_per_day: float, schedules: int, delay_days: float) -> str | None:
        """Why this plan cannot carry the load (None: it can)."""
        if self.max_messages_per_day is not None and billed_per_day > self.max_messages_per_day:
            return f"{billed_per_day:,.0f} messages/day > {self.max_messages_per_day:,.0f}"
        paid_schedules = self.usd_per_extra_schedule > 0
        limit = self.max_active_schedules
        if limit is not None and schedules > limit and not paid_schedules:
            return f"{schedules} active schedules > {limit}"
        if self.max_delay_days is not None and delay_days > self.max_delay_days:
            return f"QSTASH_MAX_DELAY {delay_days:g} days > {self.max_delay_days:g}"
        return None

    def monthly_cost(self, billed_per_day: float, schedules: int) -> float:
        """USD per month for this many billed messages a day."""
        extra = max(0, schedules - (self.max_active_schedules or schedules))
        per_message = self.usd_per_100k_messages * billed_per_day * DAYS_PER_MONTH / 100_000
        return self.monthly_usd + per_message + extra * self.usd_per_extra_schedule


@dataclass(frozen=True)
class PlanSet:
    """A named set of plans and where its figures come from."""

    name: str
    source: str
    billing: str
    beyond: str
    plans: tuple[Plan, ...]


@dataclass(frozen=True)
class PlanChoice:
    """The cheapest plan that fits (None if none does) and why the others do not."""

    plan: Plan | None
    monthly_usd: float | None
    refused: Mapping[str, str]


def load_plan_sets() -> dict[str, PlanSet]:
    """Every plan set in plans.json (shipped beside this module)."""
    raw = resources.files(__package__).joinpath("plans.json").read_text(encoding="utf-8")
    return parse_plan_sets(json.loads(raw))


def parse_plan_sets(data: Mapping[str, Any]) -> dict[str, PlanSet]:
    """Plan sets from plans.json's parsed content."""
    sets = {}
    for name, raw in data["sets"].items():
        plans = tuple(
            Plan(
                name=p["name"],
                monthly_usd=float(p["monthly_usd"]),
                usd_per_100k_messages=float(p["usd_per_100k_messages"]),
                max_messages_per_day=p.get("max_messages_per_day"),
                max_active_schedules=p.get("max_active_schedules"),
                max_delay_days=p.get("max_delay_days"),
                usd_per_extra_schedule=float(p.get("usd_per_extra_schedule", 0.0)),
                max_requests_per_second=p.get("max_requests_per_second"),
            )
            for p in raw["plans"]
        )
        sets[name] = PlanSet(name, raw["source"], raw["billing"], raw.get("beyond", ""), plans)
    return sets


def choose(
    plan_set: PlanSet,
    *,
    peak_per_day: float,
    average_per_day: float,
    schedules: int,
    delay_days: float,
) -> PlanChoice:
    """The cheapest plan of the set that carries the busiest day, priced on the average day."""
    refused: dict[str, str] = {}
    best: tuple[float, Plan] | None = None
    for plan in plan_set.plans:
        why = plan.refusal(peak_per_day, schedules, delay_days)
        if why is not None:
            refused[plan.name] = why
            continue
        cost = plan.monthly_cost(average_per_day, schedules)
        if best is None or cost < best[0]:
            best = (cost, plan)
    if best is None:
        return PlanChoice(None, None, refused)
    return PlanChoice(best[1], round(best[0], 2), refused)
