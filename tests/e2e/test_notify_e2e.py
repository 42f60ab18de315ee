"""A booking's outcome reaches a tiny local receiver through qstash_dev, and the receiver
verifies it with the verifier docs/notifications.md publishes (its code block, run as is)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from flask_app.qstash import outbox
from tests.e2e.test_qstash_path import AUTH, DAY, store_cookies, wait_for_status
from tests.factories import BOX_ID, booking_data

SECRET = "e2e-notify-secret-" + "0123456789" * 3
DOC = Path(__file__).resolve().parents[2] / "docs" / "notifications.md"


@pytest.fixture
def app_overrides():
    return {"NOTIFY_SIGNING_SECRET": SECRET}


def documented_verifier() -> Any:
    """The `verify` function of docs/notifications.md, executed from the document itself."""
    text = DOC.read_text()
    block = re.search(r"<!-- verifier:.*?-->\s*```python\n(.*?)```", text, re.S)
    assert block is not None, "docs/notifications.md lost its verifier block"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 10
    scope: dict[str, Any] = {}
    exec(code, scope)  # the document's own code, nothing else
    return scope["verify"]


class Receiver(BaseHTTPRequestHandler):
    """Records every POST: headers and the raw body."""

    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append((dict(self.headers.items()), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    received: list[tuple[dict[str, str], bytes]] = []
    handler = type("Handler", (Receiver,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def wait_for(received: list, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(received) >= count, f"{len(received)} event(s) after {timeout} s"


def test_a_booking_is_announced_to_the_receiver_which_verifies_it(live_app, sandbox, receiver):
    url, received = receiver
    sandbox.set_box_id(BOX_ID)
    client = live_app.test_client()
    store_cookies(client)
    opens = datetime.now(UTC) + timedelta(seconds=2)
    sandbox.add_class("1001", DAY, opens_at=opens, capacity=5)
    body = {
        "user_email": "ana@example.com",
        "available_at": opens.isoformat(),
        "booking_data": booking_data(day=DAY),
        "notify_url": url,
    }
    created = client.post("/api/prebookings", json=body, headers=AUTH)
    assert created.status_code == 201, created.json
    wait_for_status(client, created.json["id"], {"completed"})
    with live_app.app_context():  # what every process's background runner does each second
        assert outbox.drain(datetime.now(UTC))["notified"] == 1
    wait_for(received, 1)
    [(headers, raw)] = received
    verify = documented_verifier()
    signature = headers["X-Prebooking-Signature"]
    assert verify(SECRET, raw, signature)
    assert not verify("not-the-secret", raw, signature)
    assert not verify(SECRET, raw.replace(b"booked", b"failed"), signature)
    event = json.loads(raw)
    assert event["type"] == "prebooking.booked"
    assert event["data"]["prebooking"]["id"] == created.json["id"]
    assert "Upstash-Signature" in headers  # QStash's own, which the receiver may ignore
