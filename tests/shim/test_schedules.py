"""crontab/schedule -> QStash cron strings, and the beat -> QStash schedules plan (pure)."""

from datetime import UTC, datetime, timedelta

import pytest

from flask_app.shim.beat import SyncPlan, desired_schedules, plan_sync, schedule_id
from flask_app.shim.exceptions import UnsupportedOption
from flask_app.shim.schedules import crontab, schedule, solar, to_cron
from tests.shim.helpers import FakeSchedule


def test_crontab_positional_order_is_minute_hour_dow_dom_month():
    # Celery: crontab(minute, hour, day_of_week, day_of_month, month_of_year)
    assert crontab("0", "7", "mon-fri").to_cron() == "0 7 * * mon-fri"
    assert crontab(0, 7, "*", "1", "6").to_cron() == "0 7 1 6 *"


def test_from_string_reads_cron_order():
    spec = crontab.from_string("30 6 * 12 1")
    assert (spec.minute, spec.hour, spec.day_of_month, spec.month_of_year, spec.day_of_week) == (
        "30",
        "6",
        "*",
        "12",
        "1",
    )
    assert spec.to_cron() == "30 6 * 12 1"


def test_fields_accept_ints_sets_and_patterns():
    assert crontab(minute={30, 0}, hour="*/2").to_cron() == "0,30 */2 * * *"


def test_both_day_fields_restricted_is_refused_because_celery_ands_and_cron_ors():
    with pytest.raises(UnsupportedOption, match="day_of_week and day_of_month"):
        crontab(0, 7, day_of_week="mon", day_of_month="1").to_cron()


def test_invalid_fields_fail_at_construction():
    with pytest.raises(ValueError, match="invalid crontab"):
        crontab(minute="61")


def test_next_run_uses_cron_rules():
    start = datetime(2026, 11, 30, 6, 59, tzinfo=UTC)
    assert crontab(0, 7).next_run(start) == datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("every", "cron"),
    [
        (60, "* * * * *"),
        (300, "*/5 * * * *"),
        (timedelta(minutes=15), "*/15 * * * *"),
        (3600, "0 * * * *"),
        (timedelta(hours=6), "0 */6 * * *"),
        (schedule(timedelta(days=1)), "0 0 * * *"),
    ],
)
def test_even_intervals_map_to_cron(every, cron):
    assert to_cron(every) == cron


@pytest.mark.parametrize("every", [30, 90, 7 * 60, timedelta(hours=5), timedelta(days=2)])
def test_uneven_or_sub_minute_intervals_are_refused(every):
    with pytest.raises(UnsupportedOption, match="no cron form"):
        to_cron(every)


def test_timezone_becomes_a_cron_tz_prefix():
    assert to_cron(crontab(0, 7), "Europe/Madrid") == "CRON_TZ=Europe/Madrid 0 7 * * *"
    assert to_cron(crontab(0, 7), "UTC") == "0 7 * * *"


def test_solar_is_refused():
    with pytest.raises(UnsupportedOption):
        solar("sunset", 0, 0)


def _desired(beat, tz=None):
    return desired_schedules(beat, url_for_task=lambda n: f"http://app/t/{n}", timezone=tz)


BEAT = {
    "sweep every 5 minutes": {"task": "ops.sweep", "schedule": 300.0, "args": (1,)},
    "morning": {"task": "ops.report", "schedule": crontab(0, 7), "kwargs": {"x": 1}},
}


def test_desired_schedules_carry_task_args_and_stable_ids():
    sweep, morning = _desired(BEAT)
    assert sweep.schedule_id == "shim-sweep_every_5_minutes" == schedule_id("sweep every 5 minutes")
    assert (sweep.destination, sweep.cron) == ("http://app/t/ops.sweep", "*/5 * * * *")
    assert sweep.body["task"] == "ops.sweep" and sweep.body["args"] == [1]
    assert morning.body["kwargs"] == {"x": 1}


def test_unsupported_entry_options_are_refused():
    beat = {"x": {"task": "t", "schedule": 60, "options": {"countdown": 5}}}
    with pytest.raises(UnsupportedOption, match="countdown"):
        _desired(beat)


def _existing(desired):
    import json

    return [FakeSchedule(d.schedule_id, d.destination, d.cron, json.dumps(d.body)) for d in desired]


def test_plan_creates_updates_deletes_and_leaves_the_rest():
    desired = _desired(BEAT)
    existing = _existing(desired)
    existing[1].cron = "0 8 * * *"  # changed
    existing.append(FakeSchedule("shim-gone", "http://app/t/x", "* * * * *", "{}"))
    existing.append(FakeSchedule("not-ours", "http://elsewhere", "* * * * *", "{}"))
    plan = plan_sync(
        desired[:1] + desired[1:] + _desired({"new": {"task": "n", "schedule": 60}}), existing
    )
    assert [s.schedule_id for s in plan.create] == ["shim-new"]
    assert [s.schedule_id for s in plan.update] == ["shim-morning"]
    assert plan.delete == ["shim-gone"] and plan.unchanged == ["shim-sweep_every_5_minutes"]


def test_plan_against_its_own_result_is_a_no_op():
    desired = _desired(BEAT)
    assert plan_sync(desired, _existing(desired)).is_noop
    assert not SyncPlan(delete=["x"]).is_noop
