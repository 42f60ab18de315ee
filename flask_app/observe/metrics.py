"""Prometheus metrics: one registry per app (tests build many apps), served at /metrics.

Other modules report through two functions, given the app or inside an app context:
`webhook_response(status)` after answering a QStash delivery, and `publish_error(kind)` when
publishing to QStash failed. Arrivals are counted by the comparison module (`record_arrival`).

Note: each process has its own registry. Under gunicorn with several workers, each scrape sees
one worker; run one worker, or scrape each one (prometheus-client's multiprocess mode is not used).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, has_app_context
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from flask_app.observe.parity import LATENESS_EDGES_MS

log = logging.getLogger(__name__)

_EXT = "metrics"
#: Lateness buckets in seconds: from 5 s early to 2 min late (both paths fit).
LATENESS_BUCKETS_S = tuple(edge / 1000 for edge in LATENESS_EDGES_MS) + (float("inf"),)
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, float("inf"))
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The app's registry and every metric in it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.arrival_lateness = Histogram(
            "prebooking_arrival_lateness_seconds",
            "Arrival of a path against the booking window opening (negative: early).",
            ["path"], buckets=LATENESS_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.fire_lateness = Histogram(
            "prebooking_fire_lateness_seconds",
            "When the booking request left against the window opening.",
            ["path"], buckets=LATENESS_BUCKETS_S, registry=r,
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

    def record_arrival(self, attempt: Any) -> None:
        """Count one execution.Attempt (called by the comparison module)."""
        path = attempt.path
        self.arrivals.labels(path=path, action=str(attempt.action)).inc()
        if attempt.lateness_ms is not None:
            self.arrival_lateness.labels(path=path).observe(attempt.lateness_ms / 1000)
        if attempt.fire_lateness_ms is not None:
            self.fire_lateness.labels(path=path).observe(attempt.fire_lateness_ms / 1000)
        if attempt.booking_latency is not None:
            self.booking_latency.labels(path=path).observe(attempt.booking_latency.total_seconds())
        if attempt.won:
            outcome = attempt.outcome.value if attempt.outcome else str(attempt.action)
            self.executions.labels(path=path, outcome=outcome).inc()
        if str(attempt.action) == "lost_claim":
            self.claims_lost.labels(path=path).inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


def init_app(app: Flask) -> None:
    """Give the app its own registry."""
    app.extensions[_EXT] = Metrics()


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
