"""The discrete-event simulation on cases with known answers."""

import random
import statistics

import pytest

from flask_app.capacity import costs, model, simulate
from flask_app.capacity.inputs import CostOverrides, PlanInput
from flask_app.capacity.simulate import ADMIT, FIRE, Engine, Job


def test_simultaneous_jobs_on_one_process_finish_one_after_another():
    assert simulate.run_jobs([0, 0, 0, 0], 1.0) == [1, 2, 3, 4]


def test_two_processes_on_two_cores_serve_in_parallel():
    assert simulate.run_jobs([0, 0, 0, 0], 1.0, processes=2, cores=2) == [1, 1, 2, 2]


def test_two_processes_on_one_core_share_it():
    assert simulate.run_jobs([0, 0, 0, 0], 1.0, processes=2, cores=1) == [2, 2, 4, 4]


def test_spaced_arrivals_never_wait():
    done = simulate.run_jobs([0, 2, 4], 1.0)
    assert done == [1, 3, 5]


def test_poisson_arrivals_with_a_fixed_service_time_wait_as_m_d_1_predicts():
    rng = random.Random(7)
    rate, service, t, arrivals = 0.5, 1.0, 0.0, []
    for _ in range(40_000):
        t += rng.expovariate(rate)
        arrivals.append(t)
    done = simulate.run_jobs(arrivals, service)
    waits = [d - a - service for a, d in zip(arrivals, done, strict=True)]
    rho = rate * service
    expected = rho * service / (2 * (1 - rho))  # Pollaczek-Khinchine for M/D/1: 0.5
    assert statistics.fmean(waits) == pytest.approx(expected, rel=0.1)


def test_a_write_preempts_a_long_admission_on_its_process():
    engine = Engine(1, 1, 1.0)
    done = {}
    engine.submit(0, Job(ADMIT, 1.0, lambda: done.setdefault("admit", engine.now)))
    engine.at(
        0.5,
        lambda: engine.submit(0, Job(FIRE, 0.1, lambda: done.setdefault("fire", engine.now))),
    )
    engine.run()
    assert done["fire"] == pytest.approx(0.6)  # not after the admission
    assert done["admit"] == pytest.approx(1.1)


def test_postgresql_work_on_the_same_core_slows_the_app():
    engine = Engine(1, 1, 1.0)
    done = {}
    engine.db(0, 1.0)
    engine.submit(0, Job(ADMIT, 1.0, lambda: done.setdefault("admit", engine.now)))
    engine.run()
    assert done["admit"] == pytest.approx(2.0)


def crowd(n, k=1, instances=1, workers=1, jitter=0.0):
    return PlanInput.model_validate(
        {
            "load": {"prebookings_per_day": 1000, "largest_crowd": n, "crowd_classes": k},
            "deployment": {"instances": instances, "workers_per_instance": workers},
            "qstash": {"jitter_s": jitter},
        }
    )


UNIT = costs.with_overrides(
    costs.UnitCosts(),
    CostOverrides(admission_ms=3, prepare_ms=0.5, shot_ms=0.05, base_latency_ms=0.1),
)


def test_a_deterministic_crowd_on_one_process_matches_the_closed_form_exactly():
    p = crowd(200)
    closed = model.plan(p, UNIT).firing
    sim = simulate.simulate_crowd(p, UNIT)
    assert (sim.p50_ms, sim.p99_ms, sim.max_ms) == (closed.p50_ms, closed.p99_ms, closed.max_ms)
    assert sim.stragglers == 0 and sim.busiest_leader_shots == 200


def test_one_class_has_one_leader_whichever_process_arms_it_first():
    sim = simulate.simulate_crowd(crowd(100, workers=4), UNIT, routing="round-robin")
    assert sim.leader_processes == 1 and sim.busiest_leader_shots == 100


def test_an_overloaded_process_leaves_stragglers_as_the_closed_form_says():
    # Nothing else on the process (no prepare, no recording): the fluid queue is exact.
    slow = costs.with_overrides(UNIT, CostOverrides(admission_ms=30, prepare_ms=0, record_ms=0))
    p = crowd(300)  # 300 x 30 ms = 9 s of admission over ~4 s of spread
    closed = model.plan(p, slow).admission
    sim = simulate.simulate_crowd(p, slow)
    assert closed.stragglers > 0 and sim.stragglers > 0
    assert sim.last_admitted_s == pytest.approx(closed.last_admitted_s, abs=0.05)


def test_the_same_seed_gives_the_same_crowd():
    p = crowd(300, k=5, workers=2, jitter=1.0)
    assert simulate.simulate_crowd(p, UNIT, seed=3) == simulate.simulate_crowd(p, UNIT, seed=3)
