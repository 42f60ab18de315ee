"""The benchmark scripts still load against the current code (one had rotted after a rename)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))


def test_there_are_benchmark_scripts_to_check():
    assert len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_script_imports_and_shows_its_usage(script):
    done = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


# --- bench/scaleout.py: its accounting, on made-up stamps and on one real smoke run -----------

sys.path.insert(0, str(BENCH))
import scaleout  # noqa: E402
from stub_floor import inversions  # noqa: E402

OPEN_NS = 1_800_000_000 * 10**9


def arrival(class_id, user, ms, book_state=1):
    return {
        "class_id": class_id,
        "user": user,
        "at_ns": OPEN_NS + int(ms * 1e6),
        "book_state": book_state,
    }


def test_inversions_counts_pairs_out_of_order():
    assert inversions([0, 1, 2, 3]) == 0
    assert inversions([1, 0, 2]) == 1
    assert inversions([3, 2, 1, 0]) == 6
    assert inversions([]) == 0


def test_measure_accounts_for_every_member_sent_early_never_sent_and_placed():
    members = {"a": ["a0", "a1", "a2"], "b": ["b0", "b1"]}
    arrivals = [
        arrival("a", "a1", 1.0),  # rank 1 before rank 0: one inversion in a
        arrival("a", "a0", 2.0),
        arrival("a", "a2", 2500.0),  # after the class filled (+2 s): sent, no place
        arrival("b", "b0", -5.0, book_state=None),  # too early (refused) ...
        arrival("b", "b0", 3.0),  # ... then re-sent and booked
        arrival("z", "x", 1.0),  # not this run's
    ]
    got = scaleout.measure(members, arrivals, {"a": OPEN_NS, "b": OPEN_NS, "z": OPEN_NS})
    assert got["prebookings"] == 5
    assert got["sent"] == 4
    assert got["never_sent"] == 1  # b1
    assert got["sent"] + got["never_sent"] == got["prebookings"]
    assert got["early"] == 1
    assert got["extra_arrivals"] == 1
    assert got["fifo_inversions"] == 1
    assert got["classes_with_inversions"] == 1
    assert got["got_place"] == 3  # a0, a1, b0 (its second arrival)
    assert got["lateness_ms"]["min"] == -5.0


def test_measure_judges_by_the_gym_clock_and_counts_too_early_answers():
    """The gym's clock 20 ms behind ours: a request sent at our opening arrives 20 ms early by
    the gym's clock and is answered -12; its re-send 30 ms later is accepted, 10 ms late."""
    members = {"a": ["a0", "a1"]}
    offset = -20 * 10**6

    def gym(user, ms, state, key=None):
        row = arrival("a", user, ms, book_state=state)  # ms on OUR clock past the opening
        return row | {"gym_at_ns": row["at_ns"] + offset, "error_key": key}

    arrivals = [
        gym("a0", 0.5, -12, "ERROR_ANTELACION_CLIENTE"),  # gym: -19.5 ms, refused early
        gym("a0", 30.0, 1),  # gym: +10 ms, booked
        gym("a1", 21.0, 1),  # gym: +1 ms, booked
        gym("a1", 22.0, -12, "NOPUEDESRESERVAMISMAHORA"),  # a -12 that is not "too early"
    ]
    got = scaleout.measure(members, arrivals, {"a": OPEN_NS}, offset)
    assert got["early"] == 1
    assert got["too_early_answers"] == 1 and got["members_refused_early"] == 1
    assert got["lateness_ms"]["min"] == -19.5 and got["lateness_ms"]["max"] == 1.0
    assert got["accepted_lateness_ms"]["max"] == 10.0
    assert got["our_clock_lateness_ms"]["min"] == -19.5  # no jitter: as by the gym's clock
    assert got["got_place"] == 2
    assert got["fifo_inversions"] == 0  # a0's first (early) arrival came first
    assert got["accepted_fifo_inversions"] == 1  # but a1 was accepted before a0's re-send


def test_the_gym_clock_jitter_does_not_reorder_arrivals():
    """Inversions follow the kernel stamps (the order the box received them), not the gym's
    per-request clock reading."""
    rows = [arrival("a", "a0", 1.0), arrival("a", "a1", 1.01)]
    rows[0]["gym_at_ns"], rows[1]["gym_at_ns"] = rows[0]["at_ns"] + 10**6, rows[1]["at_ns"]
    got = scaleout.measure({"a": ["a0", "a1"]}, rows, {"a": OPEN_NS})
    assert got["fifo_inversions"] == 0
    assert got["lateness_ms"]["max"] == 2.0


def test_the_floor_aims_so_as_never_to_be_early_by_the_gym_clock():
    from stub_floor import gym_offset_ns

    assert gym_offset_ns({}) == 0
    assert gym_offset_ns({"clock": {"offset_ms": -20, "jitter_ms": 2}}) == -22 * 10**6


def test_the_pool_stays_inside_the_postgresql_budget():
    assert scaleout.pool_settings(4, 100) == {}  # the app's 10 + 10 fit
    pools = scaleout.pool_settings(8, 64)
    assert 8 * (int(pools["DB_POOL_SIZE"]) + int(pools["DB_MAX_OVERFLOW"])) <= 64


def test_smoke_shrinks_a_scenario_to_one_instance_behind_the_balancer():
    shrunk = scaleout.smoke(scaleout.SCENARIOS["scaleout-5000"])
    assert (shrunk.n, shrunk.instances, shrunk.workers, shrunk.lb) == (20, 1, 2, True)


# `slow`, not `reliability`: ~20-30 s, so it stays in `make test`, where it is the only check
# that the harness still drives the current app end to end (the --help checks only import it).
@pytest.mark.slow
def test_a_smoke_run_through_real_processes_accounts_for_every_prebooking(tmp_path):
    """gunicorn (2 workers) behind HAProxy, PostgreSQL, qstash_dev, the sandbox, the floor:
    every prebooking created is counted once (sent or never sent); never timing."""
    out = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "scaleout.py"), "--scenario", "one-class-200", "--smoke"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["settings"]["load_balancer"].startswith("haproxy")
    [run] = payload["results"]
    app, floor = run["app"], run["floor"]
    assert app["prebookings"] == 20
    assert app["sent"] + app["never_sent"] == 20
    assert app["early"] <= app["sent"] and app["got_place"] <= app["sent"]
    assert sum(run["statuses"].values()) == 20  # every prebooking the API knows, counted once
    assert sum(run["executed_by"].values()) == 20
    assert floor["prebookings"] == 20 and floor["sent"] + floor["never_sent"] == 20
    assert sum(run["lb_requests_per_instance"].values()) > 0  # the API was reached via HAProxy
