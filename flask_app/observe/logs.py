"""JSON logs (python-json-logger): one object per line, with the request's context, no secrets.

Every line carries `timestamp`, `level`, `logger`, `message`, and, when known, `request_id`
(the caller's `X-Request-ID` if it is sane, else a new one, echoed in the response), `path`
(the HTTP path), `prebooking_id` and `message_id` (QStash's `Upstash-Message-Id`). gunicorn's
own logs use the same formatter (gunicorn.conf.py `logconfig_dict`).

Secrets never reach the output: the formatter scrubs the configured secret values (tokens,
signing keys, encryption keys) and anything shaped like a bearer token, an API token or a JWT
from the finished line, so a careless `log.info("%s", headers)` cannot leak them either.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

from flask import Flask, Response, g, request
from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter

log = logging.getLogger(__name__)

_context: ContextVar[dict[str, str] | None] = ContextVar("log_context", default=None)
_secrets: set[str] = set()
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Shapes of credentials, scrubbed wherever they appear (the values themselves are also known).
_SHAPES = re.compile(
    r"(?i:bearer)\s+[^\s\"',;<]{8,}"  # an Authorization header's value
    r"|pbk_[A-Za-z0-9_-]{8,}"  # a stored API token (flask_app/api/tokens.py)
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"  # a JWT (Upstash-Signature)
)
REDACTED = "[redacted]"
#: Config entries whose values are secrets (pydantic SecretStr fields, plus Flask's own).
SECRET_CONFIG_KEYS = (
    "API_TOKEN",
    "SECRET_KEY",
    "CRON_SECRET",
    "QSTASH_TOKEN",
    "QSTASH_CURRENT_SIGNING_KEY",
    "QSTASH_NEXT_SIGNING_KEY",
    "SESSION_ENCRYPTION_KEYS",
)
_MIN_SECRET_LEN = 8  # shorter "secrets" would scrub ordinary words


def scrub(text: str) -> str:
    """The text with every known secret and credential-shaped string replaced."""
    text = _SHAPES.sub(REDACTED, text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def add_secrets(values: Iterable[str | None]) -> None:
    """Values the formatter must never print (comma-separated lists count item by item)."""
    for value in values:
        for part in [value or "", *(value or "").split(",")]:
            part = part.strip()
            if len(part) >= _MIN_SECRET_LEN:
                _secrets.add(part)


class JsonFormatter(_BaseJsonFormatter):
    """python-json-logger's formatter, plus the request context, minus secrets."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("timestamp", True)
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("fmt", ["levelname", "name", "message"])
        super().__init__(*args, **kwargs)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        for key, value in (_context.get() or {}).items():
            log_data.setdefault(key, value)
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            log_data.update(_access_fields(record.args))

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def _access_fields(atoms: dict[str, Any]) -> dict[str, Any]:
    """gunicorn's access-log atoms as fields (its message is the access_log_format line)."""
    status = str(atoms.get("s") or "")
    fields: dict[str, Any] = {"method": atoms.get("m"), "path": atoms.get("U")}
    fields["status"] = int(status) if status.isdigit() else status
    fields["duration_ms"] = round(int(atoms.get("D") or 0) / 1000, 3)
    request_id = atoms.get("{x-request-id}o")
    if request_id and request_id != "-":
        fields["request_id"] = request_id
    return fields


def make_handler(stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing JSON lines to the stream (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    return handler


def setup(level: int | str = logging.INFO) -> None:
    """JSON on the root logger, once per process (gunicorn may have installed it already)."""
    root = logging.getLogger()
    root.setLevel(level)
    if not any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        root.addHandler(make_handler())


# --- context --------------------------------------------------------------------------------


def bind(**fields: str | None) -> None:
    """Add fields to every line logged from here in this context (request or thread)."""
    current = dict(_context.get() or {})
    current.update({k: v for k, v in fields.items() if v})
    _context.set(current)


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Fields for the lines logged inside the block (a thread's unit of work)."""
    token = _context.set(dict(_context.get() or {}))
    try:
        bind(**fields)
        yield
    finally:
        _context.reset(token)


def current_request_id() -> str | None:
    """The request id bound in this context, if any (outbound calls forward it)."""
    return (_context.get() or {}).get("request_id")


def request_id_for(raw: str | None) -> str:
    """The caller's X-Request-ID when it is a sane id, else a fresh one."""
    return raw if raw and _REQUEST_ID.fullmatch(raw) else uuid.uuid4().hex


def _start_request() -> None:
    g.log_context = _context.set({})
    g.started_s = time.perf_counter()
    body = request.get_json(silent=True) if request.is_json else None
    view_args = request.view_args or {}
    bind(
        request_id=request_id_for(request.headers.get("X-Request-ID")),
        path=request.path,
        message_id=request.headers.get("Upstash-Message-Id"),
        prebooking_id=str(view_args.get("prebooking_id") or _body_id(body))[:64],
    )


def _body_id(body: Any) -> str:
    """A QStash delivery names its prebooking in the body (CONTRACT.md)."""
    return str(body.get("prebookingId") or "") if isinstance(body, dict) else ""


def _finish_request(response: Response) -> Response:
    fields = _context.get() or {}
    if "request_id" in fields:
        response.headers["X-Request-ID"] = fields["request_id"]
    elapsed_ms = (time.perf_counter() - g.get("started_s", time.perf_counter())) * 1000
    log.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status_code,
        extra={
            "method": request.method,
            "status": response.status_code,
            "endpoint": request.endpoint,
            "duration_ms": round(elapsed_ms, 3),
        },
    )
    return response


def _end_request(_exc: BaseException | None) -> None:
    token = g.pop("log_context", None)
    if token is not None:
        _context.reset(token)


def init_app(app: Flask) -> None:
    """JSON logs for the app, its secrets registered for scrubbing, request context bound."""
    add_secrets(str(app.config.get(key) or "") for key in SECRET_CONFIG_KEYS)
    if not app.testing:
        setup(app.config.get("LOG_LEVEL", "INFO"))
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)
