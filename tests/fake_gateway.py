"""A Gateway double with the same methods as flask_app.qstash.gateway.Gateway (nothing patched)."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from flask_app.qstash.gateway import Message, Published, QStashRejected, QStashUnavailable


@dataclass
class DlqEntry:
    """The fields of qstash.dlq.DlqMessage the app reads."""

    dlq_id: str
    message_id: str
    url: str
    body: str | None
    response_status: int
    response_body: str | None = None


class FakeGateway:
    """Records what the app publishes and cancels; `down = True` makes every call fail."""

    def __init__(self) -> None:
        self.down = False
        self.broken = False  # raise something that is not a QStash error (a bug)
        self.reject = False  # QStash answers 4xx
        self.published: list[Message] = []
        self.cancelled: list[str] = []
        self.dlq: list[DlqEntry] = []
        self.schedules_by_id: dict[str, Any] = {}
        self.hold: threading.Event | None = None  # set: publishing waits until it is set
        self._ids = itertools.count(1)

    def _check(self) -> None:
        if self.broken:
            raise RuntimeError("unexpected failure inside the gateway")
        if self.down:
            raise QStashUnavailable("QStash unreachable: ConnectError: connection refused")
        if self.reject:
            raise QStashRejected("QStash refused the request: status: 400, body: bad delay")

    def publish(self, msg: Message) -> Published:
        return self.batch([msg])[0]

    def batch(self, msgs: Sequence[Message]) -> list[Published]:
        if self.hold is not None:
            self.hold.wait()
        self._check()
        self.published.extend(msgs)
        return [Published(f"msg_fake_{next(self._ids)}", False) for _ in msgs]

    def cancel(self, message_id: str) -> bool:
        self._check()
        self.cancelled.append(message_id)
        return True

    def cancel_many(self, message_ids: Sequence[str]) -> int:
        self._check()
        self.cancelled.extend(message_ids)
        return len(message_ids)

    def dlq_messages(self, page_size: int = 100) -> Iterator[Any]:
        self._check()
        yield from list(self.dlq)

    def dlq_delete_many(self, dlq_ids: Sequence[str]) -> int:
        self._check()
        before = len(self.dlq)
        self.dlq = [e for e in self.dlq if e.dlq_id not in set(dlq_ids)]
        return before - len(self.dlq)

    def schedules(self) -> list[Any]:
        self._check()
        return list(self.schedules_by_id.values())

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
        self._check()
        self.schedules_by_id[schedule_id] = Schedule(
            schedule_id, destination, cron, json.dumps(body)
        )
        return schedule_id

    def delete_schedule(self, schedule_id: str) -> None:
        self._check()
        self.schedules_by_id.pop(schedule_id, None)


@dataclass
class Schedule:
    """The fields of qstash.schedule.Schedule the app reads."""

    schedule_id: str
    destination: str
    cron: str
    body: str | None
