"""The closed-form capacity model on small cases computed by hand."""

import pytest

from flask_app.capacity import costs, model, plans
from flask_app.capacity.inputs import CostOverrides, PlanInput, QStashTiming

UNIT = costs.UnitCosts()  # the fallback figures; each test states the ones it relies on


def inputs(**sections):
    return PlanInput.model_validate({"load": {"prebookings_per_day": 1000}} | sections)


def unit(**values):
    return costs.with_overrides(UNIT, CostOverrides(**values))


def test_a_crowd_rank_adds_the_crowd_lead_up_to_the_maximum_lead():
    q = QStashTiming(lead_s=3, crowd_lead_ms=10, max_lead_s=60)
    assert model.lead_s(0, q) == 3
    assert model.lead_s(100, q) == pytest.approx(4.0)
    assert model.lead_s(10_000, q) == 60


def test_whole_second_scheduling_floors_each_due_time_and_jitter_delays_it():
    q = QStashTiming(lead_s=3, crowd_lead_ms=10, jitter_s=1.0)
    # rank 0 due at -3 s exactly; rank 1 due at -3.01 s, floored to -4 s; half the jitter added
    assert model.arrival_offsets(2, q, 0.5) == [-2.5, -3.5]
    exact = q.model_copy(update={"whole_seconds": False})
    assert model.arrival_offsets(2, exact, 0.0) == pytest.approx([-3.0, -3.01])


@pytest.mark.parametrize(
    ("deployment", "rate"),
    [
        ({"workers_per_instance": 1, "cores_per_instance": 2}, 250),  # one GIL: 1 / 4 ms
        ({"workers_per_instance": 4, "cores_per_instance": 2}, 500),  # two cores: 2 / 4 ms
        ({"workers_per_instance": 4, "cores_per_instance": 2, "db_colocated": True}, 400),
        ({"workers_per_instance": 4, "cores_per_instance": 2, "instances": 2}, 1000),
    ],
)
def test_admission_rate_is_bounded_by_processes_and_by_cores(deployment, rate):
    p = inputs(deployment=deployment)
    c = unit(admission_ms=4, admission_db_ms=1)
    assert model.admission_rate(p.deployment, c) == pytest.approx(rate)


def test_fluid_departures_queue_simultaneous_arrivals_and_not_separate_ones():
    assert model.fluid_departures([0, 0, 0], 10) == pytest.approx([0.1, 0.2, 0.3])
    assert model.fluid_departures([1, 0], 10) == pytest.approx([1.1, 0.1])


def test_one_class_on_one_process_fires_one_shot_after_another():
    p = inputs(
        load={"prebookings_per_day": 1000, "largest_crowd": 3},
        qstash={"fire_stagger_ms": 0, "jitter_s": 0},
    )
    c = unit(shot_ms=1, prepare_ms=0, base_latency_ms=0, admission_ms=1)
    f = model.plan(p, c).firing
    assert (f.p50_ms, f.p99_ms, f.max_ms) == (2, 3, 3)  # shots done at 1, 2, 3 ms
    assert f.busiest_leader_shots == 3 and f.leader_processes == 1


def test_a_prepare_that_overruns_the_adoption_lead_delays_the_shots():
    p = inputs(
        load={"prebookings_per_day": 1000, "largest_crowd": 2},
        qstash={"fire_stagger_ms": 0, "jitter_s": 0},
    )
    c = unit(shot_ms=1, prepare_ms=1000, base_latency_ms=0, admission_ms=1)
    f = model.plan(p, c).firing
    assert not f.prepare_fits
    assert f.max_ms == pytest.approx(1001)  # the second is prepared 1 s after the instant


def test_more_firing_processes_than_cores_slow_every_shot():
    p = inputs(
        load={"prebookings_per_day": 1000, "largest_crowd": 2, "crowd_classes": 2},
        deployment={"workers_per_instance": 2, "cores_per_instance": 1},
        qstash={"fire_stagger_ms": 0, "jitter_s": 0},
    )
    c = unit(shot_ms=1, prepare_ms=0, base_latency_ms=0, admission_ms=1)
    f = model.plan(p, c).firing
    assert f.contention == 2 and f.max_ms == pytest.approx(2)


@pytest.mark.parametrize(
    ("admission_ms", "stragglers", "late", "max_ms"),
    [
        (1500, 0, 0, 1),  # arrives -3 s, armed -1.5 s: adopted
        (2500, 1, 0, 1),  # armed -0.5 s: fired by its own process at the instant
        (3500, 1, 1, 501),  # armed +0.5 s: fired at once, 500 ms late
    ],
)
def test_a_delivery_armed_too_late_is_a_straggler_or_late(admission_ms, stragglers, late, max_ms):
    p = inputs(load={"prebookings_per_day": 1000, "largest_crowd": 1}, qstash={"jitter_s": 0})
    c = unit(admission_ms=admission_ms, shot_ms=1, prepare_ms=0, base_latency_ms=0)
    answer = model.plan(p, c)
    assert (answer.admission.stragglers, answer.admission.late) == (stragglers, late)
    assert answer.admission.all_admitted_in_time is (stragglers == 0)
    assert answer.firing.max_ms == pytest.approx(max_ms)


def test_the_busiest_second_counts_deliveries_sharing_a_not_before_second():
    q = QStashTiming(jitter_s=0, crowd_lead_ms=10)
    # ranks 1..100 are due in (-4, -3]: floored to -4 s together
    assert model.busiest_second(model.arrival_offsets(200, q, 0.5), q) == 100
    spread = q.model_copy(update={"jitter_s": 2.0})
    assert model.busiest_second(model.arrival_offsets(200, spread, 0.5), spread) == 50


def test_connections_compare_every_pool_full_with_max_connections():
    c = unit(statements_per_delivery=10, admission_ms=4)
    small = model.plan(inputs(deployment={"workers_per_instance": 4}), c).connections
    assert (small.ceiling, small.budget, small.fits) == (4 * 20 + 5, 97, True)
    big = model.plan(inputs(deployment={"workers_per_instance": 4, "instances": 2}), c)
    assert (big.connections.ceiling, big.connections.fits) == (165, False)
    # the busiest second's 100 deliveries x 10 statements x 0.3 ms = 0.3 busy, + 1 per process
    assert big.connections.in_use_at_crowd == pytest.approx(round(100 * 0.003 + 8, 1))
    assert big.connections.recommended_pool_per_process == 3
    assert not big.connections.pgbouncer_needed  # 8 x 3 + 5 fits: lower the pools instead


def test_pgbouncer_is_needed_when_even_small_pools_do_not_fit():
    p = inputs(deployment={"workers_per_instance": 8, "instances": 8, "max_connections": 100})
    assert model.plan(p, unit(admission_ms=4)).connections.pgbouncer_needed


def test_qstash_messages_attempts_plan_and_price_by_hand():
    p = inputs(load={"prebookings_per_day": 10_000})
    c = unit(messages_per_prebooking=1.0, attempts_per_prebooking=1.07)
    use = model.plan(p, c).qstash
    assert (use.messages_per_day, use.attempts_per_day) == (10_289, 10_989)  # + 289 schedules
    assert use.plan == "pay-as-you-go"
    assert use.monthly_usd == round(10_989 * 30.44 / 100_000, 2)  # $1 per 100K, attempts
    assert use.other_billing_monthly_usd == round(10_289 * 30.44 / 100_000, 2)
    assert use.migration_plan_monthly_usd == round(10_289 * 30.44 * 60 / 100_000, 2)
    assert "free" in use.refused


def test_a_small_gym_fits_the_free_plan_with_the_schedules():
    """The schedules alone used to be 1,824 messages a day, over the free plan's 1,000."""
    p = inputs(load={"prebookings_per_day": 300})
    use = model.plan(p, unit(messages_per_prebooking=1.0, attempts_per_prebooking=1.07)).qstash
    assert use.messages_per_day == 589 and use.plan == "free"


def test_a_small_load_fits_the_free_plan_and_a_large_one_a_fixed_plan():
    small = inputs(load={"prebookings_per_day": 100}, qstash={"schedule_messages_per_day": 0})
    assert model.plan(small, unit(attempts_per_prebooking=1.07)).qstash.plan == "free"
    large = inputs(load={"prebookings_per_day": 900_000})
    use = model.plan(large, unit(attempts_per_prebooking=1.07)).qstash
    assert (use.plan, use.monthly_usd) == ("fixed-1m", 180.0)  # PAYG would be ~$294


def test_storage_is_rows_a_day_times_bytes_times_retention():
    p = inputs(
        load={"prebookings_per_day": 1000},
        storage={"prebooking_retention_days": 90, "arrival_retention_days": 30},
    )
    c = costs.UnitCosts(
        bytes_per_prebooking=1000, bytes_per_arrival=450, arrivals_per_prebooking=1.1
    )
    size = 1000 * 1000 * 90 + 1100 * 450 * 30 + 1000 * 600  # sessions: one per user
    assert model.plan(p, c).storage.steady_state_gb == round(size / 1e9, 3)


def test_monthly_total_adds_the_prices_given():
    p = inputs(
        load={"prebookings_per_day": 10_000},
        deployment={"instances": 2},
        prices={"instance_month_usd": 10, "database_month_usd": 15},
    )
    answer = model.plan(p, unit(attempts_per_prebooking=1.07))
    assert answer.monthly_usd == pytest.approx(answer.qstash.monthly_usd + 2 * 10 + 15)


def test_a_plan_refuses_a_delay_beyond_its_maximum():
    free = plans.load_plan_sets()["current"].plans[0]
    assert free.refusal(10, 1, delay_days=30) == "QSTASH_MAX_DELAY 30 days > 7"


def test_every_plan_set_states_its_source():
    for plan_set in plans.load_plan_sets().values():
        assert plan_set.source.strip() and plan_set.plans


def test_monthly_total_counts_what_has_a_price_and_names_the_rest():
    p = inputs(load={"prebookings_per_day": 10_000}, prices={"instance_month_usd": 10})
    answer = model.plan(p, unit(attempts_per_prebooking=1.07))
    assert answer.monthly_usd == pytest.approx(answer.qstash.monthly_usd + 10)
    assert "not priced: database" in answer.monthly_note
