"""/admin/login: an admin token becomes a Secure, HttpOnly, SameSite=Strict session cookie;
state changes under /admin need the form's CSRF token. (The browser test drives Chromium.)"""

import re
from datetime import UTC, datetime, timedelta

import pytest

from flask_app.api import tokens
from flask_app.api.tokens import Scope
from tests.conftest import API_TOKEN

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client, path="/admin/login"):
    page = client.get(path)
    assert page.status_code == 200
    return CSRF.search(page.get_data(as_text=True)).group(1)


def log_in(client, token=API_TOKEN, **extra):
    form = {"token": token, "csrf_token": csrf_token(client)} | extra
    return client.post("/admin/login", data=form)


def test_the_admin_page_sends_a_browser_to_the_login_form(client):
    resp = client.get("/admin/parity?since=24h")
    assert resp.status_code == 303
    assert resp.headers["Location"] == "/admin/login?next=%2Fadmin%2Fparity%3Fsince%3D24h"


def test_logging_in_sets_a_secure_httponly_strict_cookie(client):
    resp = log_in(client, next="/admin/parity?since=7d")
    assert resp.status_code == 303 and resp.headers["Location"] == "/admin/parity?since=7d"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("admin_session=")
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/", "Expires="):
        assert flag in cookie, flag
    assert API_TOKEN not in cookie
    page = client.get("/admin/parity?since=24h")
    assert page.status_code == 200 and "<svg" in page.get_data(as_text=True)


def test_a_wrong_or_client_token_is_refused_and_sets_nothing(client, session):
    client_token = tokens.issue(session, name="c", scope=Scope.CLIENT, user_email=None, now=NOW)
    for token in ("wrong", client_token[1]):
        resp = log_in(client, token)
        assert resp.status_code == 401
        assert "not a valid admin token" in resp.get_data(as_text=True)
        assert client.get("/admin/parity").status_code == 303


def test_a_stored_admin_token_logs_in_until_it_is_revoked(client, session):
    row, token = tokens.issue(session, name="ops", scope=Scope.ADMIN, user_email=None, now=NOW)
    assert log_in(client, token).status_code == 303
    assert client.get("/admin/parity").status_code == 200
    tokens.revoke(session, row.id, row.created_at)
    assert client.get("/admin/parity").status_code == 303


def test_changing_api_token_ends_its_sessions(app, client):
    assert log_in(client).status_code == 303
    app.config["API_TOKEN"] = "rotated-token"
    assert client.get("/admin/parity").status_code == 303


@pytest.mark.parametrize("form", [{"token": API_TOKEN}, {"token": API_TOKEN, "csrf_token": "x"}])
def test_login_without_the_forms_csrf_token_is_refused(client, form):
    resp = client.post("/admin/login", data=form)
    assert resp.status_code == 400 and "CSRF" in resp.json["error"]
    assert "Set-Cookie" not in resp.headers


def test_logout_needs_the_csrf_token_and_ends_the_session(client):
    assert log_in(client).status_code == 303
    refused = client.post("/admin/logout")
    assert refused.status_code == 400 and "CSRF token" in refused.json["error"]
    assert client.get("/admin/parity").status_code == 200
    done = client.post("/admin/logout", data={"csrf_token": csrf_token(client)})
    assert done.status_code == 303
    assert client.get("/admin/parity").status_code == 303


@pytest.mark.parametrize("target", ["https://evil.example/x", "//evil.example", "/api/parity"])
def test_login_never_redirects_outside_the_admin_pages(client, target):
    resp = log_in(client, next=target)
    assert resp.headers["Location"] == "/admin/parity"


def test_bearer_clients_need_no_csrf_token(client, auth):
    assert client.get("/admin/parity", headers=auth).status_code == 200
    made = client.post(
        "/api/prebookings",
        headers=auth,
        json={
            "user_email": "a@example.com",
            "available_at": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
            "booking_data": {"box": "b", "class_id": "1", "day": "20261130"},
        },
    )
    assert made.status_code == 201


def test_without_secret_key_the_login_is_disabled_and_bearer_still_works(app_config, auth):
    from flask_app import close, create_app

    app = create_app(app_config | {"SECRET_KEY": None})
    client = app.test_client()
    resp = client.get("/admin/login")
    assert resp.status_code == 503 and "SECRET_KEY" in resp.json["error"]
    assert client.get("/admin/parity").status_code == 401
    assert client.get("/admin/parity", headers=auth).status_code == 200
    close(app)
