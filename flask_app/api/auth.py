"""Bearer-token checks shared by every protected endpoint, in constant time."""

from __future__ import annotations

import hmac

from flask import current_app, request


class AuthError(Exception):
    """The caller may not use the endpoint; `status` is 401 or 503."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def require_bearer(config_key: str) -> None:
    """Check `Authorization: Bearer <app.config[config_key]>`.

    Raises:
        AuthError: 503 while the secret is unset (fail closed), 401 for a missing or wrong token.
    """
    expected = current_app.config.get(config_key)
    if not expected:
        raise AuthError(503, f"{config_key} is not configured; this endpoint is disabled")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError(401, "missing bearer token (Authorization: Bearer <token>)")
    if not hmac.compare_digest(token.strip().encode(), str(expected).encode()):
        raise AuthError(401, "invalid bearer token")
