"""The prebooking and session API, on SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest

from flask_app.core import sessions
from flask_app.models import UserSession
from tests.conftest import API_TOKEN


def body(**overrides):
    opening = datetime.now(UTC) + timedelta(days=2)
    data = {
        "user_email": "Ana@Example.com",
        "available_at": opening.isoformat(),
        "booking_data": {
            "box": "crossfitbox",
            "class_id": "12345",
            "day": "20261130",
            "family_id": None,
        },
    }
    return data | overrides


def create(client, auth, **overrides):
    resp = client.post("/api/prebookings", json=body(**overrides), headers=auth)
    assert resp.status_code == 201, resp.json
    return resp.json


def test_created_prebooking_is_pending_and_readable(client, auth):
    made = create(client, auth)
    assert made["status"] == "pending"
    assert made["user_email"] == "ana@example.com"
    assert made["booking_data"]["class_id"] == "12345"
    assert set(made) >= {
        "id",
        "status",
        "user_email",
        "booking_data",
        "available_at",
        "qstash_message_id",
        "created_at",
    }
    got = client.get(f"/api/prebookings/{made['id']}", headers=auth).json
    assert got["id"] == made["id"]
    assert got["executed_by"] is None and got["result"] is None


def test_available_at_keeps_the_instant(client, auth):
    made = create(client, auth, available_at="2026-12-01T15:00:00.250+01:00")
    assert datetime.fromisoformat(made["available_at"]) == datetime(
        2026, 12, 1, 14, 0, 0, 250000, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"available_at": "2026-12-01T15:00:00"}, "available_at"),
        ({"available_at": "tomorrow"}, "available_at"),
        ({"user_email": "not-an-email"}, "user_email"),
        ({"user_email": 42}, "user_email"),
        ({"booking_data": {"box": "b", "class_id": 12345, "day": "20261130"}}, "class_id"),
        ({"booking_data": {"box": "b", "class_id": "1", "day": "20261331"}}, "day"),
        ({"booking_data": {"box": "b", "class_id": "1", "day": "2026-11-30"}}, "day"),
        ({"booking_data": {"box": "Bad Box!", "class_id": "1", "day": "20261130"}}, "box"),
        ({"booking_data": {"class_id": "1", "day": "20261130"}}, "box"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_bad_input_is_422_naming_the_field(client, auth, change, named):
    resp = client.post("/api/prebookings", json=body(**change), headers=auth)
    assert resp.status_code == 422
    assert named in resp.json["error"]


def test_window_far_in_the_past_is_refused(client, auth):
    past = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    resp = client.post("/api/prebookings", json=body(available_at=past), headers=auth)
    assert resp.status_code == 422
    assert "past" in resp.json["error"]


@pytest.mark.parametrize(
    ("data", "content_type", "expected"),
    [
        ("{not json", "application/json", "not valid JSON"),
        ("[]", "application/json", "invalid input"),
        ("user_email=a", "application/x-www-form-urlencoded", "must be JSON"),
    ],
)
def test_malformed_bodies_are_4xx(client, auth, data, content_type, expected):
    resp = client.post("/api/prebookings", data=data, content_type=content_type, headers=auth)
    assert 400 <= resp.status_code < 500
    assert expected in resp.json["error"]


def test_oversized_body_is_413(client, auth):
    huge = {"user_email": "a@example.com", "pad": "x" * 100_000}
    resp = client.post("/api/prebookings", json=huge, headers=auth)
    assert resp.status_code == 413
    assert "too large" in resp.json["error"]


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic abc", f"bearer{API_TOKEN}"])
def test_api_needs_the_token(client, header):
    headers = {"Authorization": header} if header else {}
    resp = client.get("/api/prebookings", headers=headers)
    assert resp.status_code == 401
    assert "token" in resp.json["error"]


def test_api_without_configured_token_is_503(app, client, auth):
    app.config["API_TOKEN"] = None
    resp = client.get("/api/prebookings", headers=auth)
    assert resp.status_code == 503
    assert "API_TOKEN" in resp.json["error"]


def test_unknown_id_is_404(client, auth):
    resp = client.get("/api/prebookings/nope", headers=auth)
    assert resp.status_code == 404
    assert "nope" in resp.json["error"]


def test_unknown_route_and_wrong_method_are_json(client, auth):
    assert client.get("/api/nothing-here", headers=auth).json["error"]
    resp = client.put("/api/prebookings", headers=auth)
    assert resp.status_code == 405 and "allowed" in resp.json["error"]


def test_list_filters_and_pages_with_a_cursor(client, auth):
    ids = [create(client, auth, user_email=f"u{i % 2}@example.com")["id"] for i in range(5)]
    page1 = client.get("/api/prebookings?limit=2", headers=auth).json
    page2 = client.get(f"/api/prebookings?limit=2&cursor={page1['next_cursor']}", headers=auth).json
    page3 = client.get(f"/api/prebookings?limit=2&cursor={page2['next_cursor']}", headers=auth).json
    seen = [p["id"] for p in page1["items"] + page2["items"] + page3["items"]]
    assert seen == ids
    assert page3["next_cursor"] is None
    mine = client.get("/api/prebookings?user_email=U0@example.com", headers=auth).json["items"]
    assert [p["id"] for p in mine] == ids[0::2]
    assert client.get("/api/prebookings?status=completed", headers=auth).json["items"] == []


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=10001", "limit=abc", "status=done", "cursor=%%%", "cursor=bm9wZQ"]
)
def test_bad_list_queries_are_422(client, auth, query):
    resp = client.get(f"/api/prebookings?{query}", headers=auth)
    assert resp.status_code == 422
    assert resp.json["error"]


def test_cancel_moves_pending_to_cancelled_once(client, auth):
    made = create(client, auth)
    resp = client.delete(f"/api/prebookings/{made['id']}", headers=auth)
    assert resp.status_code == 200 and resp.json["status"] == "cancelled"
    again = client.delete(f"/api/prebookings/{made['id']}", headers=auth)
    assert again.status_code == 409
    assert "cancelled" in again.json["error"]
    assert client.delete("/api/prebookings/unknown", headers=auth).status_code == 404


def test_cookies_are_stored_encrypted_and_bound_to_their_owner(app, client, auth):
    resp = client.put(
        "/api/sessions/Ana@Example.com", json={"cookies": {"amhrdrauth": "s3cr3t"}}, headers=auth
    )
    assert resp.status_code == 200
    assert resp.json == resp.json | {
        "user_email": "ana@example.com",
        "cookie_names": ["amhrdrauth"],
    }
    with app.extensions["db"].session() as session:
        row = session.get(UserSession, "ana@example.com")
        assert "s3cr3t" not in row.cookies_encrypted
        cipher = sessions.get_cipher(app)
        assert sessions.load_cookies(session, cipher, "ana@example.com") == {"amhrdrauth": "s3cr3t"}
        # Copying Ana's ciphertext onto Bob's row does not give Bob her session.
        session.add(
            UserSession(user_email="bob@example.com", cookies_encrypted=row.cookies_encrypted)
        )
        session.commit()
        with pytest.raises(sessions.SessionTampered, match="another user"):
            sessions.load_cookies(session, cipher, "bob@example.com")


@pytest.mark.parametrize(
    ("path", "payload", "named"),
    [
        ("/api/sessions/not-an-email", {"cookies": {"a": "b"}}, "user_email"),
        ("/api/sessions/a@example.com", {"cookies": {}}, "cookies"),
        ("/api/sessions/a@example.com", {"cookies": {"a b": "c"}}, "cookie name"),
        ("/api/sessions/a@example.com", {"cookies": {"a": "x;y"}}, "characters"),
        ("/api/sessions/a@example.com", {"cookies": {"a": 1}}, "cookies"),
        ("/api/sessions/a@example.com", {"cookie": {"a": "b"}}, "cookies"),
    ],
)
def test_bad_session_input_is_422(client, auth, path, payload, named):
    resp = client.put(path, json=payload, headers=auth)
    assert resp.status_code == 422
    assert named in resp.json["error"]


def test_sessions_without_keys_answer_503(app_config, auth):
    from flask_app import close, create_app

    app = create_app(app_config | {"SESSION_ENCRYPTION_KEYS": None})
    resp = app.test_client().put(
        "/api/sessions/a@example.com", json={"cookies": {"a": "b"}}, headers=auth
    )
    assert resp.status_code == 503
    assert "SESSION_ENCRYPTION_KEYS" in resp.json["error"]
    close(app)


def test_key_rotation_keeps_old_sessions_readable(app_config, fernet_key):
    from cryptography.fernet import Fernet

    from flask_app import close, create_app

    old_app = create_app(app_config)
    with old_app.extensions["db"].session() as session:
        sessions.store_cookies(session, sessions.get_cipher(old_app), "a@example.com", {"k": "v"})
        session.commit()
    new_key = Fernet.generate_key().decode()
    new_app = create_app(app_config | {"SESSION_ENCRYPTION_KEYS": f"{new_key},{fernet_key}"})
    cipher = sessions.get_cipher(new_app)
    with new_app.extensions["db"].session() as session:
        assert sessions.load_cookies(session, cipher, "a@example.com") == {"k": "v"}
        assert sessions.rotate_all(session, cipher) == 1
        session.commit()
        only_new = sessions.load_cipher(new_key)
        assert sessions.load_cookies(session, only_new, "a@example.com") == {"k": "v"}
    for a in (old_app, new_app):
        close(a)


def test_health_is_public_and_shows_flags(client):
    resp = client.get("/api/health")
    assert resp.status_code == 200
    assert resp.json["flags"] == {
        "QSTASH_ENABLED": False,
        "QSTASH_SHADOW": False,
        "QSTASH_ROLLOUT_PERCENT": 100,
        "LEGACY_CRON_ENABLED": True,
    }
    assert resp.json["configured"]["API_TOKEN"] is True
