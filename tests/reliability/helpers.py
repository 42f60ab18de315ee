"""Small helpers shared by the in-process reliability scenarios."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from aimharder_sandbox.state import default_box_id
from tests.reliability.stack import AUTH, EXECUTE_URL

DAY = "20261202"
#: The sandbox box's own numeric id (its listing answers only for it).
BOX_ID = default_box_id("sandbox")


def store_cookies(client: Any, email: str) -> None:
    """PUT the user's AimHarder cookie (the sandbox accepts any)."""
    cookies = {"amhrdrauth": "cookie-" + email.split("@")[0]}
    resp = client.put(f"/api/sessions/{email}", json={"cookies": cookies}, headers=AUTH)
    assert resp.status_code == 200


def create(client: Any, email: str, opens: datetime, class_id: str) -> dict[str, Any]:
    """Create one prebooking through the API; its JSON."""
    body = {
        "user_email": email,
        "available_at": opens.isoformat(),
        "booking_data": {"box": "sandbox", "box_id": BOX_ID, "class_id": class_id, "day": DAY},
    }
    resp = client.post("/api/prebookings", json=body, headers=AUTH)
    assert resp.status_code == 201, resp.json
    created: dict[str, Any] = resp.json
    return created


def row(client: Any, prebooking_id: str) -> dict[str, Any]:
    """The prebooking as the API shows it."""
    found: dict[str, Any] = client.get(f"/api/prebookings/{prebooking_id}", headers=AUTH).json
    return found


def wait_status(client: Any, prebooking_id: str, statuses: set[str], timeout: float = 30) -> Any:
    """Poll until the prebooking reaches one of `statuses` (bounded)."""
    deadline = time.monotonic() + timeout
    current = row(client, prebooking_id)
    while current["status"] not in statuses:
        assert time.monotonic() < deadline, f"still {current['status']} after {timeout} s"
        time.sleep(0.05)
        current = row(client, prebooking_id)
    return current


def delivery_body(prebooking: dict[str, Any]) -> bytes:
    """The JSON body QStash delivers for a prebooking (as the app publishes it)."""
    import json

    body = {
        "prebookingId": prebooking["id"],
        "userEmail": prebooking["user_email"],
        "scheduledAt": prebooking["available_at"],
    }
    return json.dumps(body).encode()


def post_delivery(app: Any, body: bytes, signature: str | None) -> httpx.Response:
    """POST a delivery to the running app over real HTTP."""
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Upstash-Signature"] = signature
    url = app.config["APP_BASE_URL"] + EXECUTE_URL
    return httpx.post(url, content=body, headers=headers, timeout=30)


@dataclass
class Recorder:
    """WSGI middleware keeping every QStash delivery (raw headers and body) the app received."""

    wrapped: Any
    seen: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") != EXECUTE_URL:
            return self.wrapped(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length)
        import io

        environ["wsgi.input"] = io.BytesIO(raw)
        headers = {
            k[5:].replace("_", "-").title(): v for k, v in environ.items() if k[:5] == "HTTP_"
        }
        status: list[int] = []

        def start(code: str, *args: Any) -> Any:
            status.append(int(code.split()[0]))
            return start_response(code, *args)

        result = self.wrapped(environ, start)
        with self.lock:
            self.seen.append((headers, raw, status[0] if status else 0))
        return result


def record_deliveries(app: Any) -> Recorder:
    """Wrap the app so the test can read every delivery it received."""
    recorder = Recorder(app.wsgi_app)
    app.wsgi_app = recorder
    return recorder
