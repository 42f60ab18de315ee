"""The app's side of the task shim: the plugs it hands `flask_app.shim` (which imports nothing
of the app), and the app's own chores hooked on the shim's signals.

- publisher: the QStash Gateway, taking the shim's TaskMessage;
- database: the app's session factory (the shim's tables are migrated with the app's);
- verifier: the QStash path's one verified-request helper (`qstash.webhook.verified_body`);
- the daily `celery.backend_cleanup` also deletes arrivals older than ARRIVALS_RETENTION_DAYS.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, Response, current_app, request

from flask_app import shim
from flask_app.db import get_db, get_session
from flask_app.observe import comparison, metrics
from flask_app.qstash import webhook
from flask_app.qstash.gateway import Message, get_gateway
from flask_app.shim import signals
from flask_app.shim.plugs import Plugs, TaskMessage

log = logging.getLogger(__name__)


class GatewayPublisher:
    """The app's QStash Gateway with the methods the shim calls (flask_app.shim.plugs)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def publish(self, message: TaskMessage) -> str:
        """Publish a task message; returns QStash's message id."""
        flow = message.flow_control
        published = get_gateway(self.app).publish(
            Message(
                url=message.url,
                body=message.body,
                not_before=message.not_before,
                timeout_s=message.timeout_s,
                deduplication_id=message.deduplication_id,
                flow_control=(
                    {"key": flow.key, "rate": flow.rate, "period": flow.period_s}
                    if flow is not None
                    else None
                ),
            )
        )
        return published.message_id

    def cancel(self, message_id: str) -> bool:
        """Cancel a pending message."""
        return get_gateway(self.app).cancel(message_id)

    def schedules(self) -> list[Any]:
        """Every QStash schedule."""
        return get_gateway(self.app).schedules()

    def upsert_schedule(self, *, schedule_id: str, destination: str, cron: str, body: Any) -> str:
        """Create or overwrite a schedule."""
        return get_gateway(self.app).upsert_schedule(
            schedule_id=schedule_id, destination=destination, cron=cron, body=body
        )

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule."""
        get_gateway(self.app).delete_schedule(schedule_id)


def init_app(app: Flask) -> None:
    """Bind the shim to this app with its plugs; count task webhook answers; prune arrivals."""

    plugs = Plugs(
        publisher=GatewayPublisher(app),
        sessions=get_db(app).sessions,
        verify=webhook.verified_body,
        current_session=get_session,
    )
    shim.init_app(app, plugs=plugs)
    app.after_request(_count_task_response)
    signals.backend_cleanup.connect(prune_arrivals)


def _count_task_response(response: Response) -> Response:
    if request.blueprint == "task_callbacks":
        metrics.webhook_response(response.status_code)
    return response


def prune_arrivals(sender: Any, *, now: datetime, **_: Any) -> None:
    """Delete arrivals past ARRIVALS_RETENTION_DAYS (a receiver of the shim's cleanup)."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    days = int(app.config.get("ARRIVALS_RETENTION_DAYS") or 90)
    with get_db(app).session() as session:
        deleted = comparison.prune_arrivals(session, now - timedelta(days=days))
    log.info("deleted %d arrivals older than %d days", deleted, days)
