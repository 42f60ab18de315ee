"""JSON errors for the whole app: every 4xx names the problem, a 5xx is logged as a bug."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from flask_app.api.auth import AuthError
from flask_app.api.schemas import describe

log = logging.getLogger(__name__)


def error(status: int, message: str, **extra: object) -> tuple[Response, int]:
    """The contract's error shape: {"error": "<what is wrong>", ...}."""
    return jsonify({"error": message, **extra}), status


def register(app: Flask) -> None:
    """Install the app-wide handlers."""

    @app.errorhandler(ValidationError)
    def _invalid(exc: ValidationError) -> tuple[Response, int]:
        sentence, details = describe(exc)
        return error(422, f"invalid input: {sentence}", details=details)

    @app.errorhandler(AuthError)
    def _auth(exc: AuthError) -> tuple[Response, int]:
        resp, status = error(exc.status, exc.message)
        if status == 401:
            resp.headers["WWW-Authenticate"] = "Bearer"
        return resp, status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        messages = {
            404: "no such resource",
            405: f"method not allowed here{_allowed(exc)}",
            413: f"request body too large (limit {app.config['MAX_CONTENT_LENGTH']} bytes)",
        }
        status = exc.code or 500
        return error(status, messages.get(status) or exc.description or exc.name)

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return error(500, "internal error (this is a bug; it has been logged)")


def _allowed(exc: HTTPException) -> str:
    valid = getattr(exc, "valid_methods", None)
    return f"; allowed: {', '.join(sorted(valid))}" if valid else ""
