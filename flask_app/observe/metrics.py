"""Prometheus metrics: one registry per app (tests build many apps), served at /metrics.

Other modules report through two functions, given the app or inside an app context:
`webhook_response(status)` after answering a QStash delivery, and `publish_error(kind)` when
publishing to QStash failed. Arrivals are counted by the comparison module (`record_arrival`).

Also: process metrics (prometheus-client's process and platform collectors), HTTP requests by
endpoint (the route template, never a raw path), method and status with their latency, and
gauges of the rollout flags (set at each scrape from the config in force).

Lateness is recorded as a magnitude with a `side` label (`early` or `late`), never as a
negative observation: a histogram's `_sum` is a counter to Prometheus (`rate()` reads a drop
as a reset), so negative values would corrupt it. Mean lateness over a window is
`(sum{side="late"} - sum{side="early"}) / (count{side="late"} + count{side="early"})`.

Every metric is a plain Counter, Histogram or Gauge (gauges say their multiprocess_mode), so
prometheus-client's multiprocess mode can aggregate them across gunicorn workers.
Note: each process has its own registry. Under gunicorn with several workers, each scrape sees
one worker; run one worker, or scrape each one (prometheus-client's multiprocess mode is not used).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, current_app, g, has_app_context, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from flask_app.observe.parity import LATENESS_EDGES_MS

log = logging.getLogger(__name__)

_EXT = "metrics"
#: Lateness magnitudes in seconds (the report's edges, folded onto one side; +1 ms and 5 ms
#: for the QStash path's sub-10 ms firing), up to 2 min (both paths fit).
LATENESS_BUCKETS_S = tuple(
    sorted({abs(edge) / 1000 for edge in LATENESS_EDGES_MS if edge} | {0.001, 0.005})
) + (float("inf"),)
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, float("inf"))
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
#: Boolean rollout flags shown by `prebooking_rollout_flag` (those the config holds).
FLAGS = ("QSTASH_ENABLED", "QSTASH_SHADOW", "LEGACY_CRON_ENABLED")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The app's registry and every metric in it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.arrival_lateness = Histogram(
            "prebooking_arrival_lateness_seconds",
            "How far from the window opening a path arrived; side says early or late.",
            ["path", "side"], buckets=LATENESS_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.fire_lateness = Histogram(
            "prebooking_fire_lateness_seconds",
            "How far from the window opening the booking request left; side: early or late.",
            ["path", "side"], buckets=LATENESS_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.booking_latency = Histogram(
            "aimharder_booking_latency_seconds",
            "AimHarder's answer time for a booking request.",
            ["path"], buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.arrivals = Counter(
            "prebooking_arrivals", "Arrivals per path and what they did.",
            ["path", "action"], registry=r,
        )  # fmt: skip
        self.executions = Counter(
            "prebooking_executions", "Claims won per path, by booking outcome.",
            ["path", "outcome"], registry=r,
        )  # fmt: skip
        self.claims_lost = Counter(
            "prebooking_claims_lost", "Arrivals that found the prebooking claimed by someone else.",
            ["path"], registry=r,
        )  # fmt: skip
        self.webhook_responses = Counter(
            "qstash_webhook_responses", "Responses to QStash deliveries, by HTTP status.",
            ["status"], registry=r,
        )  # fmt: skip
        self.outbox = Gauge(
            "qstash_outbox_entries", "QStash calls owed (owed, retrying, gave_up).",
            ["state"], registry=r,
        )  # fmt: skip
        self.publish_errors = Counter(
            "qstash_publish_errors", "Failed publishes to QStash, by kind.",
            ["kind"], registry=r,
        )  # fmt: skip
        self.http_requests = Counter(
            "http_requests", "HTTP requests answered, by endpoint (route), method and status.",
            ["endpoint", "method", "status"], registry=r,
        )  # fmt: skip
        self.http_latency = Histogram(
            "http_request_duration_seconds", "Time to answer an HTTP request, by endpoint.",
            ["endpoint", "method"], buckets=HTTP_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.rollout_flags = Gauge(
            "prebooking_rollout_flag", "Rollout flags in force (1 true, 0 false).",
            ["flag"], registry=r, multiprocess_mode="max",
        )  # fmt: skip
        self.rollout_percent = Gauge(
            "qstash_rollout_percent", "QSTASH_ROLLOUT_PERCENT in force.",
            registry=r, multiprocess_mode="max",
        )  # fmt: skip
        ProcessCollector(registry=r)  # process_cpu_seconds_total, resident memory, open fds
        PlatformCollector(registry=r)  # python_info

    def record_arrival(self, attempt: Any) -> None:
        """Count one execution.Attempt (called by the comparison module)."""
        path = attempt.path
        self.arrivals.labels(path=path, action=str(attempt.action)).inc()
        if attempt.lateness_ms is not None:
            observe_offset(self.arrival_lateness, path, attempt.lateness_ms)
        if attempt.fire_lateness_ms is not None:
            observe_offset(self.fire_lateness, path, attempt.fire_lateness_ms)
        if attempt.booking_latency is not None:
            self.booking_latency.labels(path=path).observe(attempt.booking_latency.total_seconds())
        if attempt.won:
            outcome = attempt.outcome.value if attempt.outcome else str(attempt.action)
            self.executions.labels(path=path, outcome=outcome).inc()
        if str(attempt.action) == "lost_claim":
            self.claims_lost.labels(path=path).inc()

    def set_flags(self, config: Mapping[str, Any]) -> None:
        """The rollout flags in force (called before each scrape)."""
        for flag in FLAGS:
            if flag in config:
                self.rollout_flags.labels(flag=flag).set(1 if config[flag] else 0)
        self.rollout_percent.set(float(config.get("QSTASH_ROLLOUT_PERCENT", 0)))

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


def observe_offset(histogram: Histogram, path: str, offset_ms: float) -> None:
    """Record an offset from the opening as a magnitude on its side (see the module doc)."""
    side = "early" if offset_ms < 0 else "late"
    histogram.labels(path=path, side=side).observe(abs(offset_ms) / 1000)


def init_app(app: Flask) -> None:
    """Give the app its own registry, and count and time every HTTP request."""
    app.extensions[_EXT] = Metrics()
    app.before_request(_start_timer)
    app.after_request(_count_request)


def _start_timer() -> None:
    g.metrics_started_s = time.perf_counter()


def _count_request(response: Response) -> Response:
    found = get_metrics()
    if found is not None:
        # The route template, so ids and junk paths never become label values.
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        method = request.method
        found.http_requests.labels(endpoint, method, str(response.status_code)).inc()
        started = g.get("metrics_started_s")
        if started is not None:
            found.http_latency.labels(endpoint, method).observe(time.perf_counter() - started)
    return response


def owning_app(app: Flask | None = None) -> Flask | None:
    """The app to report to: the given one, else the current one (None outside both)."""
    if app is not None:
        return app
    if has_app_context():
        found: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        return found
    return None


def get_metrics(app: Flask | None = None) -> Metrics | None:
    """The app's Metrics, or None when no app with metrics is around."""
    owner = owning_app(app)
    if owner is None:
        return None
    metrics: Metrics | None = owner.extensions.get(_EXT)
    return metrics


def webhook_response(status: int, app: Flask | None = None) -> None:
    """Count one response to a QStash delivery (call it from the webhook views)."""
    metrics = get_metrics(app)
    if metrics is not None:
        metrics.webhook_responses.labels(status=str(status)).inc()


def publish_error(kind: str, app: Flask | None = None) -> None:
    """Count one failed QStash publish; kind: e.g. "unavailable", "rejected"."""
    metrics = get_metrics(app)
    if metrics is not None:
        metrics.publish_errors.labels(kind=kind).inc()


def outbox_entries(counts: dict[str, int], app: Flask | None = None) -> None:
    """Set the outbox gauges from its latest counts (the outbox's stats job)."""
    metrics = get_metrics(app)
    if metrics is not None:
        for state, count in counts.items():
            metrics.outbox.labels(state=state).set(count)
