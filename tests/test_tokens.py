"""Scoped tokens: admin does everything; a client token only prebookings and sessions, and a
bound one only its user's. Stored hashed; managed by `flask --app wsgi tokens`."""

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from flask_app.api import tokens
from flask_app.api.tokens import Scope
from flask_app.models import ApiToken
from tests.factories import make_prebooking

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def issue(session, scope=Scope.CLIENT, user_email=None, name="t"):
    return tokens.issue(session, name=name, scope=scope, user_email=user_email, now=NOW)[1]


def body(email="ana@example.com"):
    return {
        "user_email": email,
        "available_at": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
        "booking_data": {"box": "b", "class_id": "1", "day": "20261130"},
    }


def test_only_the_hash_of_a_token_is_stored(session):
    row, token = tokens.issue(session, name="app", scope=Scope.CLIENT, user_email=None, now=NOW)
    assert token.startswith("pbk_") and len(token) > 40
    stored = session.get(ApiToken, row.id)
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in {stored.token_hash, stored.prefix, stored.name}
    assert stored.prefix == token[:12]


def test_api_token_from_the_environment_is_an_admin_token(client, auth):
    assert client.get("/api/parity", headers=auth).status_code == 200
    assert client.get("/api/prebookings", headers=auth).status_code == 200


def test_an_admin_token_can_do_everything(client, session):
    token = issue(session, Scope.ADMIN)
    assert client.get("/api/parity", headers=bearer(token)).status_code == 200
    assert client.post("/api/prebookings", json=body(), headers=bearer(token)).status_code == 201


def test_a_client_token_uses_the_api_but_not_admin_endpoints(client, session):
    token = issue(session)
    made = client.post("/api/prebookings", json=body(), headers=bearer(token))
    assert made.status_code == 201
    assert client.get("/api/prebookings", headers=bearer(token)).json["items"]
    one = client.get(f"/api/prebookings/{made.json['id']}", headers=bearer(token))
    assert one.status_code == 200
    cookies = {"cookies": {"amhrdrauth": "x"}}
    put = client.put("/api/sessions/bo@example.com", json=cookies, headers=bearer(token))
    assert put.status_code == 200
    gone = client.delete(f"/api/prebookings/{made.json['id']}", headers=bearer(token))
    assert gone.status_code == 200
    for path in ("/api/parity", "/admin/parity"):
        resp = client.get(path, headers=bearer(token))
        assert resp.status_code == 403
        assert resp.json == {"error": "this endpoint needs an admin token"}


def test_a_bound_client_token_sees_only_its_users_data(client, session):
    token = issue(session, user_email="Ana@Example.com")
    mine = make_prebooking(session, user_email="ana@example.com")
    theirs = make_prebooking(session, user_email="bo@example.com")
    listed = client.get("/api/prebookings", headers=bearer(token)).json["items"]
    assert [item["id"] for item in listed] == [mine.id]
    assert client.get(f"/api/prebookings/{mine.id}", headers=bearer(token)).status_code == 200
    for call in (client.get, client.delete):
        resp = call(f"/api/prebookings/{theirs.id}", headers=bearer(token))
        assert resp.status_code == 404
        assert resp.json["error"] == f"no prebooking with id {theirs.id}"
    assert client.delete(f"/api/prebookings/{mine.id}", headers=bearer(token)).status_code == 200


def test_a_bound_client_token_cannot_act_for_another_user(client, session):
    token = issue(session, user_email="ana@example.com")
    cookies = {"cookies": {"amhrdrauth": "x"}}
    put = client.put("/api/sessions/bo@example.com", json=cookies, headers=bearer(token))
    assert put.status_code == 403
    assert put.json == {"error": "this token may only act for ana@example.com"}
    own = client.put("/api/sessions/ANA@example.com", json=cookies, headers=bearer(token))
    assert own.status_code == 200
    made = client.post("/api/prebookings", json=body("bo@example.com"), headers=bearer(token))
    assert made.status_code == 403
    listed = client.get("/api/prebookings?user_email=bo@example.com", headers=bearer(token))
    assert listed.status_code == 403
    assert client.post("/api/prebookings", json=body(), headers=bearer(token)).status_code == 201


def test_a_revoked_token_no_longer_authenticates(client, session):
    row, token = tokens.issue(session, name="x", scope=Scope.CLIENT, user_email=None, now=NOW)
    assert client.get("/api/prebookings", headers=bearer(token)).status_code == 200
    tokens.revoke(session, row.id, NOW)
    resp = client.get("/api/prebookings", headers=bearer(token))
    assert resp.status_code == 401 and resp.json == {"error": "invalid bearer token"}


@pytest.mark.parametrize("token", ["pbk_made-up", "nope", "test-api-token-but-longer"])
def test_unknown_tokens_get_401(client, token):
    resp = client.get("/api/prebookings", headers=bearer(token))
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == "Bearer"


def test_without_any_token_configured_the_api_is_disabled(app_config, session):
    from flask_app import close, create_app

    app = create_app(app_config | {"API_TOKEN": None})
    client = app.test_client()
    resp = client.get("/api/prebookings", headers=bearer("anything"))
    assert resp.status_code == 503 and "tokens create" in resp.json["error"]
    with app.app_context():
        from flask_app.db import get_db

        with get_db().session() as s:
            token = issue(s)
    assert client.get("/api/prebookings", headers=bearer(token)).status_code == 200
    close(app)


def test_an_admin_token_cannot_be_bound_to_a_user(session):
    with pytest.raises(ValueError, match="admin tokens cannot be bound"):
        tokens.issue(session, name="x", scope=Scope.ADMIN, user_email="a@b.co", now=NOW)


def test_cli_creates_lists_and_revokes_tokens(runner, client):
    made = runner.invoke(
        args=["tokens", "create", "--name", "ana's app", "--email", "ana@example.com"]
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("pbk_")
    token_id = made.stdout.split()[3]
    assert client.get("/api/prebookings", headers=bearer(token)).status_code == 200
    listed = runner.invoke(args=["tokens", "list"])
    assert token_id in listed.output and "ana@example.com" in listed.output
    assert token not in listed.output and "client" in listed.output
    revoked = runner.invoke(args=["tokens", "revoke", token_id])
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert client.get("/api/prebookings", headers=bearer(token)).status_code == 401
    assert token_id not in runner.invoke(args=["tokens", "list"]).output
    assert token_id in runner.invoke(args=["tokens", "list", "--all"]).output


def test_cli_refuses_bad_input_with_a_message(runner):
    bad_email = runner.invoke(args=["tokens", "create", "--name", "x", "--email", "not-an-email"])
    assert bad_email.exit_code == 2 and "--email" in bad_email.output
    bound_admin = runner.invoke(
        args=["tokens", "create", "--name", "x", "--scope", "admin", "--email", "a@b.co"]
    )
    assert bound_admin.exit_code == 2 and "admin tokens cannot be bound" in bound_admin.output
    unknown = runner.invoke(args=["tokens", "revoke", "no-such-id"])
    assert unknown.exit_code == 1 and "no token with id no-such-id" in unknown.output
