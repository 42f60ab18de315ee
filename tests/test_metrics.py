"""Metrics: process and HTTP metrics, rollout-flag gauges, and lateness whose `_sum` survives."""

from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flask_app.observe.metrics import LATENESS_BUCKETS_S, Metrics


def scrape(client):
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_process_and_platform_metrics_are_exported(client):
    found = {name for name, _ in scrape(client)}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= found


def test_http_requests_are_counted_by_route_template_method_and_status(client, auth):
    client.get("/api/prebookings/0b6e5c58-3f5e-4d43-9a55-5d5b8f1f4a11", headers=auth)
    client.get("/no/such/path/123")
    found = scrape(client)
    rule = "/api/prebookings/<prebooking_id>"
    get_404 = (("method", "GET"), ("status", "404"))
    assert found[("http_requests_total", (("endpoint", rule), *get_404))] == 1
    assert found[("http_requests_total", (("endpoint", "unmatched"), *get_404))] == 1
    timed = (("endpoint", rule), ("method", "GET"))
    assert found[("http_request_duration_seconds_count", timed)] == 1
    assert not [key for key in found if "0b6e5c58" in str(key) or "/no/such" in str(key)]


@pytest.fixture
def app_overrides():
    return {"QSTASH_SHADOW": True, "QSTASH_ROLLOUT_PERCENT": 25}


def test_rollout_flags_are_gauges_of_the_config_in_force(client):
    found = scrape(client)
    flags = {dict(labels)["flag"]: v for (name, labels), v in found.items()
             if name == "prebooking_rollout_flag"}  # fmt: skip
    assert flags == {"QSTASH_ENABLED": 0, "QSTASH_SHADOW": 1, "LEGACY_CRON_ENABLED": 1}
    assert found[("qstash_rollout_percent", ())] == 25


def attempt(lateness_ms, fire_lateness_ms=None):
    return SimpleNamespace(
        path="qstash", action="executed", lateness_ms=lateness_ms,
        fire_lateness_ms=fire_lateness_ms, booking_latency=None, won=False, outcome=None,
    )  # fmt: skip


def sums(metrics):
    text = metrics.exposition().decode()
    return {
        (s.name, s.labels.get("side")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("prebooking_arrival_lateness_seconds_sum")
    }


def test_lateness_is_a_magnitude_per_side_so_sums_only_grow():
    metrics = Metrics()
    before = {}
    for lateness_ms in (-2968.4, 3.6, -1200.0, 40829.5, 0.0):
        metrics.record_arrival(attempt(lateness_ms, fire_lateness_ms=lateness_ms))
        now = sums(metrics)
        assert all(now[key] >= before.get(key, 0) for key in now)  # a counter never drops
        before = now
    assert before[("prebooking_arrival_lateness_seconds_sum", "early")] == pytest.approx(4.1684)
    assert before[("prebooking_arrival_lateness_seconds_sum", "late")] == pytest.approx(40.8331)
    assert min(LATENESS_BUCKETS_S) > 0  # no negative bucket bound anywhere
