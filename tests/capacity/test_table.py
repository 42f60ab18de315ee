"""bench/capacity_table.py files measured runs from each benchmark's JSON shape."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "capacity_table.py"
spec = importlib.util.spec_from_file_location("capacity_table", BENCH)
assert spec and spec.loader
table = importlib.util.module_from_spec(spec)
sys.modules["capacity_table"] = table  # dataclasses look their module up
spec.loader.exec_module(table)
V1 = table.BY_ID["V1"]


def test_a_precision_run_of_the_scenario_size_is_filed():
    data = {
        "results": [
            {"n": 50, "vs_available_at_ms": {"p99": 1.0}},
            {"n": 200, "vs_available_at_ms": {"p50": 2.0, "p99": 5.0, "max": 6.0}, "arrived": 200},
        ]
    }
    (run,) = table.runs_from(data, V1, "main abc", "x.json")
    assert (run["p99_ms"], run["all_sent"], run["code"]) == (5.0, True, "main abc")


def test_a_scaleout_run_is_filed_from_its_app_section():
    data = {
        "results": [
            {
                "app": {
                    "prebookings": 200,
                    "lateness_ms": {"p50": 1.0, "p99": 3.0, "max": 4.0},
                    "never_sent": 2,
                    "fifo_inversions": 0,
                },
                "loadavg_after": [0.5, 0.4, 0.3],
            }
        ]
    }
    (run,) = table.runs_from(data, V1, "main abc", "x.json")
    assert (run["p99_ms"], run["all_sent"], run["loadavg_1m"]) == (3.0, False, 0.5)


def test_a_webhook_throughput_run_is_filed():
    data = {"first_deliveries": {"per_s": 300.0}, "duplicate_deliveries": {"per_s": 900.0}}
    (run,) = table.runs_from(data, table.BY_ID["W4"], "main abc", "w.json")
    assert (run["first_per_s"], run["duplicates_per_s"]) == (300.0, 900.0)
