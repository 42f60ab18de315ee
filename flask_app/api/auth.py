"""Who is calling: bearer tokens (API_TOKEN or a stored scoped token) and the admin session.

Every comparison of a secret is constant time. Bearer tokens serve programs; the admin page
also accepts the signed session cookie that /admin/login sets (flask_app/api/login.py).
"""

from __future__ import annotations

import hashlib
import hmac

from flask import current_app, g, request, session

from flask_app.api import tokens
from flask_app.api.tokens import Principal, Scope
from flask_app.db import get_session


class AuthError(Exception):
    """The caller may not use the endpoint; `status` is 401, 403 or 503."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LoginRequired(Exception):
    """A browser asked for the admin page without credentials: send it to /admin/login."""


def require_bearer(config_key: str) -> None:
    """Check `Authorization: Bearer <app.config[config_key]>` (the cron endpoint's secret).

    Raises:
        AuthError: 503 while the secret is unset (fail closed), 401 for a missing or wrong token.
    """
    expected = current_app.config.get(config_key)
    if not expected:
        raise AuthError(503, f"{config_key} is not configured; this endpoint is disabled")
    if not hmac.compare_digest(_bearer().encode(), str(expected).encode()):
        raise AuthError(401, "invalid bearer token")


def require(scope: Scope) -> Principal:
    """The request's principal, which must hold `scope` (admin holds every scope).

    Raises:
        AuthError: 503 when no token of any kind is configured, 401 for a missing or unknown
            token, 403 for a client token on an admin endpoint.
    """
    principal = authenticate()
    if scope is Scope.ADMIN and not principal.is_admin:
        raise AuthError(403, "this endpoint needs an admin token")
    g.principal = principal
    return principal


def authenticate() -> Principal:
    """Resolve the bearer token: API_TOKEN is an admin token, else a live stored token.

    Raises:
        AuthError: see require().
    """
    if not is_any_token_configured():
        raise AuthError(
            503,
            "no API token is configured (set API_TOKEN or run `flask --app wsgi tokens "
            "create`); this endpoint is disabled",
        )
    found = resolve(_bearer())
    if found is None:
        raise AuthError(401, "invalid bearer token")
    return found


def is_any_token_configured() -> bool:
    """API_TOKEN is set, or a live stored token exists."""
    return bool(current_app.config.get("API_TOKEN")) or tokens.any_live(get_session())


def resolve(token: str) -> Principal | None:
    """The principal a token stands for, or None (compared in constant time)."""
    api_token = current_app.config.get("API_TOKEN")
    if api_token and hmac.compare_digest(token.encode(), str(api_token).encode()):
        return Principal(Scope.ADMIN)
    return tokens.find(get_session(), token)


def current_principal() -> Principal:
    """The principal require() found for this request."""
    principal: Principal = g.principal
    return principal


def _bearer() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "missing bearer token (Authorization: Bearer <token>)")
    return token.strip()


# --- the admin page's session ---------------------------------------------------------------

_SESSION_KEY = "principal"


def fingerprint(secret: str) -> str:
    """What the session cookie keeps of API_TOKEN: changing API_TOKEN ends those sessions."""
    return hashlib.sha256(b"admin-session:" + secret.encode()).hexdigest()


def remember(principal: Principal) -> None:
    """Keep an admin principal in the signed session cookie (after a successful login)."""
    session.clear()
    session.permanent = True
    if principal.token_id is None:
        session[_SESSION_KEY] = {"api_token": fingerprint(str(current_app.config["API_TOKEN"]))}
    else:
        session[_SESSION_KEY] = {"token_id": principal.token_id}


def forget() -> None:
    """End the admin session (logout)."""
    session.clear()


def require_admin_page() -> Principal:
    """An admin from the Authorization header, else from the session cookie.

    Raises:
        AuthError: a bearer token that is not an admin's (or no SECRET_KEY, so no login).
        LoginRequired: neither (a browser is sent to the login form).
    """
    if "Authorization" in request.headers or not current_app.secret_key:
        return require(Scope.ADMIN)
    principal = _from_session()
    if principal is None:
        if not is_any_token_configured():
            return require(Scope.ADMIN)  # 503: nobody could log in
        raise LoginRequired()
    g.principal = principal
    return principal


def _from_session() -> Principal | None:
    """The session's admin while its token is still valid (revocation ends sessions)."""
    remembered = session.get(_SESSION_KEY)
    if not isinstance(remembered, dict):
        return None
    api_token = current_app.config.get("API_TOKEN")
    kept = remembered.get("api_token")
    if isinstance(kept, str) and api_token:
        if hmac.compare_digest(kept, fingerprint(str(api_token))):
            return Principal(Scope.ADMIN)
        return None
    token_id = remembered.get("token_id")
    if isinstance(token_id, str) and tokens.is_live(get_session(), token_id, Scope.ADMIN):
        return Principal(Scope.ADMIN, None, token_id)
    return None
