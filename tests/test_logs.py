"""JSON logs: one object per line with request id, path, prebooking id and message id, and
never a secret (tokens, cookies, signing and encryption keys)."""

import io
import json
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest

from flask_app.api import tokens
from flask_app.api.tokens import Scope
from flask_app.config import DEV_QSTASH_CURRENT_SIGNING_KEY, DEV_QSTASH_NEXT_SIGNING_KEY
from flask_app.observe import logs
from flask_app.qstash.planning import EXECUTE_PATH
from tests.conftest import API_TOKEN, SECRET_KEY
from tests.shim.helpers import sign


@pytest.fixture
def lines():
    """Everything logged while the test runs, as parsed JSON objects (DEBUG and up)."""
    stream = io.StringIO()
    handler = logs.make_handler(stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.setLevel(level)


def body():
    return {
        "user_email": "ana@example.com",
        "available_at": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
        "booking_data": {"box": "b", "class_id": "1", "day": "20261130"},
    }


def test_each_request_logs_one_json_line_with_its_context(client, auth, lines):
    made = client.post("/api/prebookings", json=body(), headers=auth | {"X-Request-ID": "req-42.a"})
    assert made.headers["X-Request-ID"] == "req-42.a"
    client.get(f"/api/prebookings/{made.json['id']}", headers=auth)
    found = [line for line in lines() if line["logger"] == "flask_app.observe.logs"]
    create, read = found[-2], found[-1]
    assert create["request_id"] == "req-42.a" and create["path"] == "/api/prebookings"
    assert create["prebooking_id"] == made.json["id"] and create["status"] == 201
    assert create["method"] == "POST" and create["level"] == "INFO" and "timestamp" in create
    assert read["prebooking_id"] == made.json["id"] and read["request_id"] != "req-42.a"


def test_a_delivery_line_carries_the_message_and_prebooking_ids(client, lines):
    raw = json.dumps({"prebookingId": "p-1", "userEmail": "a@b.co", "scheduledAt": "x"})
    client.post(
        EXECUTE_PATH,
        data=raw,
        content_type="application/json",
        headers={"Upstash-Message-Id": "msg_123", "Upstash-Signature": "forged"},
    )
    (line,) = [x for x in lines() if x.get("path") == EXECUTE_PATH and "status" in x]
    assert (line["message_id"], line["prebooking_id"], line["status"]) == ("msg_123", "p-1", 401)


@pytest.mark.parametrize("sent", ["has space", "x" * 200, "semi;colon", "<script>"])
def test_an_unusable_request_id_is_replaced(client, sent):
    got = client.get("/api/health", headers={"X-Request-ID": sent}).headers["X-Request-ID"]
    assert got != sent and re.fullmatch(r"[0-9a-f]{32}", got)


def test_nothing_secret_is_ever_logged(app, client, auth, session, fernet_key, lines):
    _, stored = tokens.issue(
        session, name="t", scope=Scope.ADMIN, user_email=None, now=datetime.now(UTC)
    )
    cookie_value = "aimharder-session-cookie-value-1234"
    client.put(
        "/api/sessions/ana@example.com",
        json={"cookies": {"amhrdrauth": cookie_value}},
        headers={"Authorization": f"Bearer {stored}"},
    )
    made = client.post("/api/prebookings", json=body(), headers=auth).json
    client.get("/api/prebookings", headers={"Authorization": "Bearer wrong-token-value-1"})
    page = client.get("/admin/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    login = client.post("/admin/login", data={"token": API_TOKEN, "csrf_token": csrf})
    admin_cookie = login.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    client.get("/admin/parity")
    raw = json.dumps({"prebookingId": made["id"], "userEmail": "ana@example.com",
                      "scheduledAt": made["available_at"]})  # fmt: skip
    signature = sign(raw.encode(), app.config["APP_BASE_URL"] + EXECUTE_PATH)
    signed = {"Upstash-Signature": signature, "Upstash-Message-Id": "msg_s"}
    client.post(EXECUTE_PATH, data=raw, content_type="application/json", headers=signed)
    logging.getLogger("careless").warning("headers were %s", {"Authorization": f"Bearer {stored}"})
    output = "\n".join(json.dumps(line) for line in lines())
    assert len(lines()) >= 8
    for secret in (
        API_TOKEN, stored, SECRET_KEY, fernet_key, cookie_value, admin_cookie, csrf, signature,
        DEV_QSTASH_CURRENT_SIGNING_KEY, DEV_QSTASH_NEXT_SIGNING_KEY, "wrong-token-value-1",
    ):  # fmt: skip
        assert secret not in output
    assert "[redacted]" in output  # the careless line was scrubbed, not dropped


def test_scrub_replaces_credential_shapes_and_known_values():
    logs.add_secrets(["sekrit-value-99,second-key-value"])
    text = logs.scrub(
        "Authorization: Bearer abc.defghi token=pbk_0123456789abcdef "
        "jwt=eyJhbGciOiJI.eyJpc3MiOiJV.sig keys sekrit-value-99 and second-key-value"
    )
    assert text == (
        "Authorization: [redacted] token=[redacted] jwt=[redacted] keys [redacted] and [redacted]"
    )


def test_a_published_message_forwards_the_request_id_to_its_delivery():
    from flask_app.qstash.gateway import Message, _request

    msg = Message(url="https://x.example/api/qstash/prebooking-execute", body={})
    assert "X-Request-ID" not in _request(msg)["headers"]
    with logs.bound(request_id="req-7"):
        assert _request(msg)["headers"]["X-Request-ID"] == "req-7"
