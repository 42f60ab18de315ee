"""A Gateway double with the same methods as flask_app.qstash.gateway.Gateway (nothing patched)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from flask_app.qstash.gateway import Message, Published, QStashUnavailable


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
        self.published: list[Message] = []
        self.cancelled: list[str] = []
        self.dlq: list[DlqEntry] = []
        self._ids = itertools.count(1)

    def _check(self) -> None:
        if self.broken:
            raise RuntimeError("unexpected failure inside the gateway")
        if self.down:
            raise QStashUnavailable("QStash unreachable: ConnectError: connection refused")

    def publish(self, msg: Message) -> Published:
        return self.batch([msg])[0]

    def batch(self, msgs: Sequence[Message]) -> list[Published]:
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
