"""The only code that talks to QStash: a thin typed wrapper over the official SDK.

SDK and transport errors are translated into one small tree, with the cause kept:

    QStashError
    ├── QStashUnavailable   network trouble, timeouts, 5xx, rate limits: try again later
    └── QStashRejected      QStash refused the request (4xx): retrying the same call won't help
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import httpx
from flask import Flask, current_app
from qstash import QStash
from qstash import errors as sdk_errors
from qstash.message import BatchRequest, FlowControl

from flask_app.observe import logs

T = TypeVar("T")
_EXT = "qstash"


class QStashError(Exception):
    """Base of every QStash failure."""


class QStashUnavailable(QStashError):
    """QStash could not be reached or is overloaded; the call may succeed later."""


class QStashRejected(QStashError):
    """QStash answered with a client error."""


@dataclass(frozen=True)
class Message:
    """One message to publish: JSON body, destination and QStash options (as headers)."""

    url: str
    body: Any
    not_before: int | None = None  # unix seconds
    delay_s: int | None = None
    deduplication_id: str | None = None
    retries: int | None = None
    retry_delay: str | None = None  # QStash expression in milliseconds, e.g. "500 * (1 + retried)"
    timeout_s: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    label: str | None = None
    flow_control: FlowControl | None = None  # Upstash-Flow-Control-Key/-Value


@dataclass(frozen=True)
class Published:
    message_id: str
    deduplicated: bool


def _request(msg: Message) -> BatchRequest:
    req: BatchRequest = {
        "url": msg.url,
        "body": json.dumps(msg.body),
        "content_type": "application/json",
        # QStash forwards it to the delivery, so both ends log the same request id.
        "headers": _with_request_id(msg.headers),
    }
    if msg.not_before is not None:
        req["not_before"] = msg.not_before
    if msg.delay_s is not None:
        req["delay"] = f"{msg.delay_s}s"
    if msg.deduplication_id is not None:
        req["deduplication_id"] = msg.deduplication_id
    if msg.retries is not None:
        req["retries"] = msg.retries
    if msg.retry_delay is not None:
        req["retry_delay"] = msg.retry_delay
    if msg.timeout_s is not None:
        req["timeout"] = f"{msg.timeout_s}s"
    if msg.label is not None:
        req["label"] = msg.label
    if msg.flow_control is not None:
        req["flow_control"] = msg.flow_control
    return req


def _with_request_id(headers: dict[str, str]) -> dict[str, str]:
    request_id = logs.current_request_id()
    return ({"X-Request-ID": request_id} if request_id else {}) | dict(headers)


def _classify(exc: Exception) -> QStashError:
    text = str(exc)
    if isinstance(
        exc, sdk_errors.RateLimitExceededError | sdk_errors.DailyMessageLimitExceededError
    ):
        return QStashUnavailable(f"QStash rate limit: {text}")
    if isinstance(exc, httpx.HTTPError | OSError):
        return QStashUnavailable(f"QStash unreachable: {type(exc).__name__}: {text}")
    if "status: 5" in text:  # the SDK's message: "Request failed with status: 503, body: ..."
        return QStashUnavailable(f"QStash server error: {text}")
    return QStashRejected(f"QStash refused the request: {text}")


class Gateway:
    """Typed access to the QStash features the service uses."""

    def __init__(self, client: QStash) -> None:
        self.client = client

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (sdk_errors.QStashError, httpx.HTTPError, OSError) as exc:
            raise _classify(exc) from exc

    def publish(self, msg: Message) -> Published:
        """Publish one message.

        Raises:
            QStashUnavailable, QStashRejected
        """
        return self.batch([msg])[0]

    def batch(self, msgs: Sequence[Message]) -> list[Published]:
        """Publish many messages in one request (QStash's batch endpoint), in order.

        Raises:
            QStashUnavailable, QStashRejected
        """
        if not msgs:
            return []
        # batch (not batch_json): qstash 3.4.0's batch_json drops retry_delay.
        answers = self._call(lambda: self.client.message.batch([_request(m) for m in msgs]))
        out = []
        for answer in answers:
            if isinstance(answer, list):  # URL-group destinations; we never publish to groups
                raise QStashRejected("unexpected URL-group answer from QStash batch")
            out.append(Published(answer.message_id, answer.deduplicated))
        return out

    def cancel(self, message_id: str) -> bool:
        """Cancel a pending message; False if QStash no longer knows it (delivered or gone).

        Raises:
            QStashUnavailable, QStashRejected (other than 404)
        """
        try:
            self._call(lambda: self.client.message.cancel(message_id))
        except QStashRejected as exc:
            if "status: 404" in str(exc):
                return False
            raise
        return True

    def cancel_many(self, message_ids: Sequence[str]) -> int:
        """Cancel many messages; returns how many QStash cancelled."""
        if not message_ids:
            return 0
        return self._call(lambda: self.client.message.cancel_many(list(message_ids)))

    def dlq_messages(self, page_size: int = 100) -> Iterator[Any]:
        """Every DLQ entry (qstash.dlq.DlqMessage), following cursors."""
        cursor: str | None = None
        while True:
            page = self._call(partial(self.client.dlq.list, cursor=cursor, count=page_size))
            yield from page.messages
            cursor = page.cursor
            if not cursor:
                return

    def dlq_delete_many(self, dlq_ids: Sequence[str]) -> int:
        """Remove entries from the DLQ; returns how many were deleted."""
        if not dlq_ids:
            return 0
        return self._call(lambda: self.client.dlq.delete_many(list(dlq_ids)))

    def schedules(self) -> list[Any]:
        """Every schedule (qstash.schedule.Schedule)."""
        return self._call(lambda: self.client.schedule.list())

    def upsert_schedule(
        self,
        *,
        schedule_id: str,
        destination: str,
        cron: str,
        body: Any,
        retries: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> str:
        """Create or overwrite the schedule with this id; returns its id."""
        return self._call(
            lambda: self.client.schedule.create_json(
                destination=destination,
                cron=cron,
                body=body,
                schedule_id=schedule_id,
                retries=retries,
                headers=headers,
            )
        )

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule."""
        self._call(lambda: self.client.schedule.delete(schedule_id))


def make_client(
    token: str, base_url: str, *, connect_timeout_s: float = 0.5, read_timeout_s: float = 1.0
) -> QStash:
    """An SDK client whose every call ends within about connect + read timeout.

    A QStash that accepts and never answers must not hold a user's create or cancel (the
    SDK's own read timeout is 600 s, with 5 retries). No SDK retries either: a failed publish
    is stored on the prebooking and published again by the relay.
    """
    client = QStash(token, retry=False, base_url=base_url)
    timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s, pool=connect_timeout_s)
    # qstash 3.4.0 takes no timeout argument; its httpx.Client is HttpClient._client.
    client.http._client = httpx.Client(timeout=timeout)  # noqa: SLF001
    return client


def init_app(app: Flask) -> None:
    """Keep a Gateway in app.extensions["qstash"] (tests may pass QSTASH_GATEWAY)."""
    gateway = app.config.get("QSTASH_GATEWAY")
    if gateway is None:
        client = make_client(
            app.config["QSTASH_TOKEN"],
            app.config["QSTASH_URL"],
            connect_timeout_s=float(app.config["QSTASH_CONNECT_TIMEOUT_S"]),
            read_timeout_s=float(app.config["QSTASH_READ_TIMEOUT_S"]),
        )
        gateway = Gateway(client)
    app.extensions[_EXT] = gateway


def get_gateway(app: Flask | None = None) -> Gateway:
    """The app's Gateway."""
    gateway: Gateway = (app or current_app).extensions[_EXT]
    return gateway


@contextmanager
def translated() -> Iterator[None]:
    """Translate SDK/transport errors raised by ad-hoc SDK use into our tree."""
    try:
        yield
    except (sdk_errors.QStashError, httpx.HTTPError, OSError) as exc:
        raise _classify(exc) from exc
