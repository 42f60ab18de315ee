"""Test doubles for the shim: a recording Gateway and QStash-style signed deliveries."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from flask_app.config import DEV_QSTASH_CURRENT_SIGNING_KEY
from flask_app.qstash.gateway import Message, Published

_ids = itertools.count(1)


@dataclass
class FakeSchedule:
    schedule_id: str
    destination: str
    cron: str
    body: str | None


@dataclass
class FakeGateway:
    """Records what would be published; same methods as flask_app.qstash.gateway.Gateway."""

    published: list[tuple[str, Message]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    schedule_table: dict[str, FakeSchedule] = field(default_factory=dict)

    def publish(self, msg: Message) -> Published:
        message_id = f"msg_{next(_ids)}"
        self.published.append((message_id, msg))
        return Published(message_id, False)

    def cancel(self, message_id: str) -> bool:
        self.cancelled.append(message_id)
        return True

    def schedules(self) -> list[Any]:
        return list(self.schedule_table.values())

    def upsert_schedule(self, *, schedule_id, destination, cron, body, **_kw) -> str:
        self.schedule_table[schedule_id] = FakeSchedule(
            schedule_id, destination, cron, json.dumps(body)
        )
        return schedule_id

    def delete_schedule(self, schedule_id: str) -> None:
        del self.schedule_table[schedule_id]

    def take(self) -> list[tuple[str, Message]]:
        """The messages published since the last take()."""
        out, self.published = self.published, []
        return out


def sign(body: bytes, url: str, key: str = DEV_QSTASH_CURRENT_SIGNING_KEY) -> str:
    """An Upstash-Signature JWT as QStash makes it."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode().rstrip("=")
    now = int(time.time())
    claims = {
        "iss": "Upstash",
        "sub": url,
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": f"jwt_{now}",
        "body": digest,
    }
    return jwt.encode(claims, key, algorithm="HS256")


def deliver(client: Any, message_id: str, msg: Message, retried: int = 0) -> Any:
    """POST a recorded message to its endpoint, signed, as QStash would."""
    raw = json.dumps(msg.body).encode()
    path = msg.url.split("://", 1)[1].split("/", 1)[1]
    headers = {
        "Upstash-Signature": sign(raw, msg.url),
        "Upstash-Message-Id": message_id,
        "Upstash-Retried": str(retried),
        "Content-Type": "application/json",
    }
    return client.post("/" + path, data=raw, headers=headers)


class Recorder:
    """A signal receiver that keeps (signal name, sender, kwargs) in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, dict[str, Any]]] = []

    def __call__(self, sender: Any = None, signal: Any = None, **kwargs: Any) -> None:
        self.events.append((signal.name, sender, kwargs))

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.events]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [kw for n, _, kw in self.events if n == name]
