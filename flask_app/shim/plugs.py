"""What the app hands the shim (its ports): a publisher, a database and a request verifier.

The shim imports nothing of the app that uses it. `flask_app.shim.init_app(app, plugs=Plugs(...))`
gives it:

- `publisher`: an object with the QStash Gateway's methods, taking the shim's `TaskMessage`
  (any exception it raises becomes Celery's `OperationalError` at the call);
- `sessions`: a SQLAlchemy `sessionmaker` on the database that holds the shim's tables
  (`flask_app.shim.models.metadata`);
- `verify(url)`: the app's verified-request helper: the current request's raw body if QStash
  signed it for `url` (the public URL the task was published to), else None: the task endpoint
  then answers 401 (one helper checks every QStash route of the app);
- `current_session` (optional): the session of the current request, for `delay_on_commit`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class FlowControl:
    """QStash flow control: at most `rate` deliveries per `period_s` for `key` (global)."""

    key: str
    rate: int
    period_s: int


@dataclass(frozen=True)
class TaskMessage:
    """One task message: JSON body, destination and the QStash options the shim uses."""

    url: str
    body: dict[str, Any]
    not_before: int | None = None  # unix seconds
    timeout_s: int | None = None
    deduplication_id: str | None = None
    flow_control: FlowControl | None = None


class Publisher(Protocol):
    """The QStash operations the shim needs (the app's Gateway, adapted)."""

    def publish(self, message: TaskMessage) -> str:
        """Publish one message; returns QStash's message id."""

    def cancel(self, message_id: str) -> bool:
        """Cancel a pending message; False if QStash no longer knows it."""

    def schedules(self) -> list[Any]:
        """Every schedule (objects with schedule_id, destination, cron, body)."""

    def upsert_schedule(self, *, schedule_id: str, destination: str, cron: str, body: Any) -> str:
        """Create or overwrite a schedule; returns its id."""

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule."""


Verify = Callable[[str], bytes | None]


@dataclass(frozen=True)
class Plugs:
    """Everything the shim uses from its host app."""

    publisher: Publisher
    sessions: Callable[[], Session]
    verify: Verify
    current_session: Callable[[], Session] | None = None
