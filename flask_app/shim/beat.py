"""beat_schedule -> QStash schedules: the desired set (pure) and the sync plan (pure)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from flask_app.shim import serialization
from flask_app.shim.exceptions import UnsupportedOption
from flask_app.shim.schedules import to_cron

SCHEDULE_PREFIX = "shim-"
_OPTIONS = {"headers", "ignore_result", "queue"}


@dataclass(frozen=True)
class DesiredSchedule:
    """One QStash schedule the beat schedule asks for."""

    schedule_id: str
    entry: str
    destination: str
    cron: str
    body: dict[str, Any]


@dataclass
class SyncPlan:
    """What to do so QStash holds exactly the desired schedules (ours only: id prefix)."""

    create: list[DesiredSchedule] = field(default_factory=list)
    update: list[DesiredSchedule] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def is_noop(self) -> bool:
        """Whether nothing needs changing."""
        return not (self.create or self.update or self.delete)


def schedule_id(entry: str) -> str:
    """A stable QStash schedule id for an entry name (letters, digits, '-', '.', '_')."""
    return SCHEDULE_PREFIX + re.sub(r"[^A-Za-z0-9._-]", "_", entry)


def desired_schedules(
    beat_schedule: Mapping[str, Mapping[str, Any]],
    *,
    url_for_task: Any,
    timezone: str | None,
    default_queue: str = "celery",
) -> list[DesiredSchedule]:
    """The QStash schedules for every beat entry.

    Raises:
        UnsupportedOption: a schedule or option QStash cannot express.
        ValueError: an entry without task or schedule, or two entries with one id.
    """
    out: dict[str, DesiredSchedule] = {}
    for entry, spec in beat_schedule.items():
        if "task" not in spec or "schedule" not in spec:
            raise ValueError(f"beat entry {entry!r} needs 'task' and 'schedule'")
        options = dict(spec.get("options") or {})
        _check_options(entry, options, default_queue)
        body = {
            "task": spec["task"],
            "args": serialization.to_jsonable(list(spec.get("args") or ())),
            "kwargs": serialization.to_jsonable(dict(spec.get("kwargs") or {})),
            "headers": serialization.to_jsonable(dict(options.get("headers") or {})),
            "ignore_result": bool(options.get("ignore_result", False)),
            "beat_entry": entry,
        }
        sid = schedule_id(entry)
        if sid in out:
            raise ValueError(f"beat entries {out[sid].entry!r} and {entry!r} map to one id {sid}")
        cron = to_cron(spec["schedule"], timezone)
        out[sid] = DesiredSchedule(sid, entry, url_for_task(spec["task"]), cron, body)
    return list(out.values())


def _check_options(entry: str, options: Mapping[str, Any], default_queue: str) -> None:
    for key, value in options.items():
        if key == "queue" and value in (None, default_queue):
            continue
        if key not in _OPTIONS or key == "queue":
            raise UnsupportedOption(
                f"beat entry {entry!r}: option {key}={value!r} is not supported for schedules"
            )


def plan_sync(desired: Iterable[DesiredSchedule], existing: Iterable[Any]) -> SyncPlan:
    """Compare with QStash's schedules (objects with schedule_id, destination, cron, body)."""
    ours = {s.schedule_id: s for s in existing if s.schedule_id.startswith(SCHEDULE_PREFIX)}
    plan = SyncPlan()
    wanted = list(desired)
    for want in wanted:
        have = ours.get(want.schedule_id)
        if have is None:
            plan.create.append(want)
        elif _same(want, have):
            plan.unchanged.append(want.schedule_id)
        else:
            plan.update.append(want)
    names = {w.schedule_id for w in wanted}
    plan.delete = sorted(sid for sid in ours if sid not in names)
    return plan


def _same(want: DesiredSchedule, have: Any) -> bool:
    try:
        body = json.loads(have.body) if have.body else None
    except json.JSONDecodeError:
        body = None
    return bool(
        have.destination == want.destination and have.cron == want.cron and body == want.body
    )


class SchedulePublisher(Protocol):
    """The part of a publisher applying a plan uses (the shim's Publisher plug has it, and so
    has the app's Gateway)."""

    def upsert_schedule(
        self, *, schedule_id: str, destination: str, cron: str, body: Any
    ) -> Any: ...

    def delete_schedule(self, schedule_id: str) -> Any: ...


def apply_plan(plan: SyncPlan, publisher: SchedulePublisher) -> None:
    """Make QStash's schedules match: create and update what differs, delete what is gone."""
    for want in plan.create + plan.update:
        publisher.upsert_schedule(
            schedule_id=want.schedule_id,
            destination=want.destination,
            cron=want.cron,
            body=want.body,
        )
    for schedule_id in plan.delete:
        publisher.delete_schedule(schedule_id)
