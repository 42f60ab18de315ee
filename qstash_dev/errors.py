"""Errors the API answers with: each carries the HTTP status it maps to."""

from __future__ import annotations


class QStashDevError(Exception):
    """Base of every error the local server reports to a client."""

    status = 500


class BadRequest(QStashDevError):
    """The request is malformed (400)."""

    status = 400


class Unauthorized(QStashDevError):
    """The bearer token is missing or wrong (401)."""

    status = 401


class NotFound(QStashDevError):
    """The addressed object does not exist (404)."""

    status = 404


class MethodNotAllowed(QStashDevError):
    """The path exists but not with this verb (405)."""

    status = 405
