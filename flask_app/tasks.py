"""The service's shim tasks (written against flask_app.shim, as Celery code would be)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask_app.execution import Attempt, get_executor
from flask_app.shim import shared_task


@shared_task(name="prebooking.execute", max_retries=0, ignore_result=False)
def execute_prebooking(
    prebooking_id: str,
    path: str,
    arrived_at: datetime | None = None,
    fire_at: datetime | None = None,
    message_id: str | None = None,
    retried: int | None = None,
) -> dict[str, Any]:
    """Run one arrival of `path` ("qstash" or "cron") through the execution core.

    The QStash webhook and the cron tick call it in-process so the task signals fire for both
    paths (the comparison module and metrics observe them the same way):

        result = execute_prebooking.apply(
            args=(prebooking_id, "qstash"),
            kwargs={"arrived_at": arrived_at, "message_id": msg_id, "retried": retried},
        )
        summary = result.get(propagate=False)

    Returns a JSON-able summary of the Attempt.
    """
    attempt = get_executor().attempt(
        prebooking_id,
        path=path,
        arrived_at=arrived_at,
        fire_at=fire_at,
        message_id=message_id,
        retried=retried,
    )
    return summarize(attempt)


def summarize(attempt: Attempt) -> dict[str, Any]:
    """The Attempt as JSON-able data (datetimes stay datetimes: Celery-JSON tags them)."""
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
        "lateness_ms": attempt.lateness_ms,
        "fire_lateness_ms": attempt.fire_lateness_ms,
        "message_id": attempt.message_id,
        "retried": attempt.retried,
    }
