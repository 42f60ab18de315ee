"""What the capacity planner is asked about: a load, a deployment, QStash's timing, prices.

Every input is validated (pydantic, unknown keys refused), so a typo or a negative load is an
error naming the field instead of a plan computed on nonsense. Pure: no I/O.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Load(_Strict):
    """How many prebookings, when their windows open, and the largest crowd at one instant."""

    prebookings_per_day: NonNegativeFloat
    # "uniform", or [[hour, share], ...]: the share of a day's windows opening in each UTC hour.
    windows: Literal["uniform"] | list[tuple[int, float]] = "uniform"
    largest_crowd: Annotated[int, Field(ge=1)] = 200
    crowd_classes: Annotated[int, Field(ge=1)] = 1
    peak_day_factor: Annotated[float, Field(ge=1)] = 1.0  # busiest day / average day
    users: Annotated[int, Field(ge=0)] | None = None  # stored sessions; default: prebookings/day

    @field_validator("windows")
    @classmethod
    def _shares(
        cls, value: Literal["uniform"] | list[tuple[int, float]]
    ) -> Literal["uniform"] | list[tuple[int, float]]:
        if value == "uniform":
            return value
        hours = [hour for hour, _ in value]
        if any(not 0 <= hour <= 23 for hour in hours) or len(set(hours)) != len(hours):
            raise ValueError("hours must be distinct integers 0..23")
        if any(share < 0 for _, share in value) or sum(share for _, share in value) <= 0:
            raise ValueError("shares must be >= 0 and add up to more than 0")
        return value

    @model_validator(mode="after")
    def _classes_fit(self) -> Load:
        if self.crowd_classes > self.largest_crowd:
            raise ValueError("crowd_classes cannot exceed largest_crowd (a class has >= 1 member)")
        return self

    def peak_hour_share(self) -> float:
        """The share of a day's windows in its busiest hour."""
        if self.windows == "uniform":
            return 1 / 24
        total = sum(share for _, share in self.windows)
        return max(share for _, share in self.windows) / total


class Deployment(_Strict):
    """Instances of the app, their cores and gunicorn workers, and the PostgreSQL they share."""

    instances: Annotated[int, Field(ge=1)] = 1
    cores_per_instance: PositiveFloat = 2.0
    workers_per_instance: Annotated[int, Field(ge=1)] = 1
    # Cores of each instance taken by other work (PostgreSQL if not counted below, a load
    # generator, the sandbox in a benchmark): the app gets cores_per_instance minus this.
    background_cores: NonNegativeFloat = 0.0
    db_colocated: bool = False  # PostgreSQL's CPU per delivery runs on the app's cores
    db_pool_size: Annotated[int, Field(ge=1)] = 10  # DB_POOL_SIZE
    db_max_overflow: Annotated[int, Field(ge=0)] = 10  # DB_MAX_OVERFLOW
    max_connections: Annotated[int, Field(ge=1)] = 100  # PostgreSQL's max_connections
    reserved_connections: Annotated[int, Field(ge=0)] = 3  # superuser_reserved_connections
    other_connections: Annotated[int, Field(ge=0)] = 5  # CLI, migrations, psql, monitoring
    statement_latency_ms: PositiveFloat = 0.3  # one round trip + execution (local: ~0.3 ms)

    @model_validator(mode="after")
    def _cores_left(self) -> Deployment:
        if self.background_cores >= self.cores_per_instance:
            raise ValueError("background_cores must leave some of cores_per_instance to the app")
        return self

    @property
    def processes(self) -> int:
        return self.instances * self.workers_per_instance

    @property
    def app_cores(self) -> float:
        return self.cores_per_instance - self.background_cores


class QStashTiming(_Strict):
    """When QStash delivers a crowd's messages, and the service's own lead settings."""

    jitter_s: NonNegativeFloat = 1.0  # delivery at not_before + U(0, jitter_s)
    whole_seconds: bool = True  # not_before is Unix seconds: deliver_at is floored
    lead_s: PositiveFloat = 3.0  # QSTASH_LEAD_SECONDS
    crowd_lead_ms: NonNegativeFloat = 10.0  # QSTASH_CROWD_LEAD_MS
    max_lead_s: PositiveFloat = 60.0  # QSTASH_MAX_LEAD_SECONDS
    adopt_lead_s: PositiveFloat = 1.0  # the class leader adopts and prepares this long ahead
    fire_stagger_ms: NonNegativeFloat = 0.01  # QSTASH_FIRE_STAGGER_MS
    max_delay_days: PositiveFloat = 7.0  # QSTASH_MAX_DELAY: the plan must allow it
    schedule_messages_per_day: NonNegativeFloat | None = None  # default: measured (costs)
    active_schedules: Annotated[int, Field(ge=0)] | None = None  # default: measured (costs)
    billing: Literal["attempts", "messages"] = "attempts"  # what Upstash bills: see plans.json
    plans: Literal["current", "migration-plan"] = "current"

    @model_validator(mode="after")
    def _leads(self) -> QStashTiming:
        if self.max_lead_s < self.lead_s:
            raise ValueError("max_lead_s must be >= lead_s")
        if self.adopt_lead_s > self.lead_s:
            raise ValueError("adopt_lead_s must be <= lead_s (adoption needs the deliveries in)")
        return self


class Storage(_Strict):
    """How long rows are kept (steady-state database size)."""

    prebooking_retention_days: PositiveFloat = 90.0
    arrival_retention_days: PositiveFloat = 90.0  # ARRIVALS_RETENTION_DAYS (the cleanup job)


class Prices(_Strict):
    """Monthly prices you pay outside QStash (no default: they are yours to state)."""

    instance_month_usd: NonNegativeFloat | None = None
    database_month_usd: NonNegativeFloat | None = None


class CostOverrides(_Strict):
    """Unit costs to use instead of the measured ones in costs.json (ms of CPU unless named)."""

    admission_ms: PositiveFloat | None = None
    admission_db_ms: NonNegativeFloat | None = None
    prepare_ms: NonNegativeFloat | None = None
    shot_ms: PositiveFloat | None = None
    record_ms: NonNegativeFloat | None = None
    base_latency_ms: NonNegativeFloat | None = None
    duplicate_ms: PositiveFloat | None = None
    create_ms: NonNegativeFloat | None = None
    statements_per_delivery: NonNegativeFloat | None = None
    messages_per_prebooking: NonNegativeFloat | None = None
    attempts_per_prebooking: NonNegativeFloat | None = None


class PlanInput(_Strict):
    """Everything the planner takes; every section has defaults except the load."""

    load: Load
    deployment: Deployment = Deployment()
    qstash: QStashTiming = QStashTiming()
    storage: Storage = Storage()
    prices: Prices = Prices()
    costs: CostOverrides = CostOverrides()
