"""/admin/login and /admin/logout: a form that turns an admin token into a session cookie.

The cookie is Flask's signed session (SECRET_KEY): Secure, HttpOnly, SameSite=Strict, 8 hours
(flask_app/config.py FLASK_DEFAULTS). Anything that changes state under /admin needs the
form's CSRF token (Flask-WTF's CSRFProtect). Bearer-token APIs need none: browsers never
attach an Authorization header on their own.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from flask import Blueprint, Flask, Response, current_app, redirect, render_template_string, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFProtect

from flask_app.api import auth
from flask_app.api.errors import error

log = logging.getLogger(__name__)

bp = Blueprint("login", __name__)
csrf = CSRFProtect()

LANDING = "/admin/parity"
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Admin login</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;max-width:28rem;margin:4rem auto}
input{display:block;width:100%;margin:.5rem 0;padding:.4rem}.err{color:#b00}</style></head>
<body><h1>Prebooking admin</h1>
{% if problem %}<p class="err" id="problem">{{ problem }}</p>{% endif %}
<form method="post" action="/admin/login" id="login">
<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
<input type="hidden" name="next" value="{{ next }}">
<label for="token">Admin token (API_TOKEN or an admin token from <code>tokens create</code>)</label>
<input type="password" id="token" name="token" autocomplete="off" required>
<button type="submit" id="submit">Log in</button>
</form></body></html>
"""


def _check_csrf() -> None:
    """Every state-changing request under /admin needs the session's CSRF token.

    Raises:
        flask_wtf.csrf.CSRFError: 400 naming what is wrong with the token.
    """
    if request.path.startswith("/admin/") and request.method not in _SAFE_METHODS:
        _need_secret_key()
        csrf.protect()


@bp.get("/admin/login")
def login_form() -> ResponseReturnValue:
    _need_secret_key()
    return _page(None, 200)


@bp.post("/admin/login")
def login() -> ResponseReturnValue:
    found = auth.resolve(request.form.get("token", "").strip())
    if found is None or not found.is_admin:
        log.warning("admin login refused from %s", request.remote_addr)
        return _page("That is not a valid admin token.", 401)
    auth.remember(found)
    return redirect(_next_path(request.form.get("next")), code=303)


@bp.post("/admin/logout")
def logout() -> ResponseReturnValue:
    auth.forget()
    return redirect("/admin/login", code=303)


def _page(problem: str | None, status: int) -> tuple[Response, int]:
    html = render_template_string(
        PAGE, problem=problem, next=_next_path(request.values.get("next"))
    )
    return Response(html, mimetype="text/html"), status


def _next_path(raw: str | None) -> str:
    """Only our own admin pages: never an open redirect to another site."""
    if raw and raw.startswith("/admin/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return LANDING


class SecretKeyMissing(Exception):
    """The login needs SECRET_KEY to sign its cookie."""


def _need_secret_key() -> None:
    if not current_app.secret_key:
        raise SecretKeyMissing()


def init_app(app: Flask) -> None:
    """CSRF protection, the blueprint, and redirects to the login form."""
    csrf.init_app(app)
    app.before_request(_check_csrf)
    app.register_blueprint(bp)

    @app.errorhandler(auth.LoginRequired)
    def _to_login(_exc: auth.LoginRequired) -> ResponseReturnValue:
        wanted = urlencode({"next": request.full_path.rstrip("?")})
        return redirect(f"/admin/login?{wanted}", code=303)

    @app.errorhandler(SecretKeyMissing)
    def _no_key(_exc: SecretKeyMissing) -> tuple[Response, int]:
        return error(503, "SECRET_KEY is not configured; the admin login is disabled")
