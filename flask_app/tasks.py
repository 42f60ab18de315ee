"""The service's shim tasks (written against flask_app.shim, as Celery code would be)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask_app.aimharder.client import BookingOutcome
from flask_app.core.execution import Action, Attempt, get_executor
from flask_app.shim import shared_task


@shared_task(name="prebooking.execute", max_retries=0, ignore_result=False)
def execute_prebooking(
    prebooking_id: str,
    path: str,
    arrived_at: datetime | None = None,
    fire_at: datetime | None = None,
    message_id: str | None = None,
    retried: int | None = None,
    settle_at: datetime | None = None,
) -> dict[str, Any]:
    """Run one arrival of `path` ("qstash", "cron" or "shadow") through the execution core.

    Both paths call it in-process through run_arrival(), so the shim's task signals fire for
    every arrival of either path, and the comparison module and metrics observe them alike.
    A "shadow" arrival is observed only: it never claims or books.
    """
    executor = get_executor()
    if path == "shadow":
        attempt = executor.observe(
            prebooking_id, path=path, arrived_at=arrived_at, message_id=message_id, retried=retried
        )
    else:
        attempt = executor.attempt(
            prebooking_id,
            path=path,
            arrived_at=arrived_at,
            fire_at=fire_at,
            message_id=message_id,
            retried=retried,
            settle_at=settle_at,
        )
    return summarize(attempt)


def run_arrival(prebooking_id: str, path: str, **kwargs: Any) -> Attempt:
    """Run execute_prebooking in this process (Celery's `apply`) and hand back the Attempt.

    Raises:
        whatever the execution raised (e.g. SQLAlchemyError), after the task signals fired.
    """
    result = execute_prebooking.apply(args=(prebooking_id, path), kwargs=kwargs, throw=True)
    return restore(result.get())


def summarize(attempt: Attempt) -> dict[str, Any]:
    """The Attempt as JSON-able data (datetimes stay datetimes: Celery-JSON tags them)."""
    latency = attempt.booking_latency
    return {
        "prebooking_id": attempt.prebooking_id,
        "path": attempt.path,
        "action": str(attempt.action),
        "won": attempt.won,
        "status": attempt.status,
        "outcome": str(attempt.outcome) if attempt.outcome is not None else None,
        "arrived_at": attempt.arrived_at,
        "available_at": attempt.available_at,
        "fired_at": attempt.fired_at,
        "booking_latency_ms": latency / timedelta(milliseconds=1) if latency else None,
        "lateness_ms": attempt.lateness_ms,
        "fire_lateness_ms": attempt.fire_lateness_ms,
        "message_id": attempt.message_id,
        "retried": attempt.retried,
        "detail": {str(k): v if _plain(v) else str(v) for k, v in attempt.detail.items()},
    }


def restore(summary: dict[str, Any]) -> Attempt:
    """The Attempt a summary was made from."""
    latency = summary.get("booking_latency_ms")
    outcome = summary.get("outcome")
    return Attempt(
        prebooking_id=summary["prebooking_id"],
        path=summary["path"],
        arrived_at=summary["arrived_at"],
        action=Action(summary["action"]),
        available_at=summary.get("available_at"),
        won=bool(summary.get("won")),
        status=summary.get("status"),
        outcome=BookingOutcome(outcome) if outcome else None,
        fired_at=summary.get("fired_at"),
        booking_latency=timedelta(milliseconds=latency) if latency is not None else None,
        message_id=summary.get("message_id"),
        retried=summary.get("retried"),
        detail=dict(summary.get("detail") or {}),
    )


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
