"""QStash delivery of shim tasks: a sent task -> one message; a delivery -> one traced run.

Message body (JSON, args/kwargs in Celery-JSON): `{"id", "task", "args", "kwargs", "retries",
"eta", "expires", "headers", "callbacks", "errbacks", "root_id", "parent_id", "ignore_result",
"shadow"}`. A schedule's body has no "id": each firing uses its QStash message id.
"""

from __future__ import annotations

import json
import logging
import math
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from flask import Flask

from flask_app.qstash.gateway import Message, QStashError, get_gateway
from flask_app.shim import backend, serialization, signals, states
from flask_app.shim.app import Celery, flask_app_for
from flask_app.shim.exceptions import (
    DecodeError,
    NotRegistered,
    OperationalError,
    Reject,
    TaskRevokedError,
    UnsupportedOption,
)
from flask_app.shim.result import AsyncResult
from flask_app.shim.task import Context, Signature, Task, check_option

log = logging.getLogger(__name__)

TASKS_PATH = "/api/qstash/tasks/"
# Accepted and without effect over QStash (AMQP plumbing; publish retries are the SDK's).
_PLUMBING = {
    "exchange",
    "routing_key",
    "producer",
    "connection",
    "compression",
    "add_to_parent",
    "publisher",
    "retry",
    "retry_policy",
    "declare",
    "exchange_type",
    "delivery_mode",
    "mandatory",
    "immediate",
    "serializer",
    "queue",
    "time_limit",
}
_KNOWN = {
    "countdown",
    "eta",
    "expires",
    "headers",
    "ignore_result",
    "retries",
    "root_id",
    "parent_id",
}


class TaskReceiver:
    """The fixed sender of task_received / task_unknown / task_rejected (Celery's consumer)."""

    hostname = f"qstash@{socket.gethostname()}"

    def __repr__(self) -> str:
        return "<TaskReceiver qstash>"


receiver = TaskReceiver()


def task_url(flask_app: Flask, name: str) -> str:
    """The public URL QStash delivers a task to."""
    base: str = flask_app.config["APP_BASE_URL"]
    return base.rstrip("/") + TASKS_PATH + quote(name, safe="")


def _aware(value: datetime, app: Celery) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=app.tzinfo)


def _expires_at(value: Any, now: datetime, app: Celery) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _aware(value, app).astimezone(UTC)
    if isinstance(value, str):
        return _aware(datetime.fromisoformat(value), app).astimezone(UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return now + timedelta(seconds=value)
    raise TypeError(f"expires must be seconds or a datetime, not {value!r}")


def _eta_at(options: Mapping[str, Any], now: datetime, app: Celery) -> datetime | None:
    countdown, eta = options.get("countdown"), options.get("eta")
    if countdown is not None:  # countdown wins, as in Celery
        return now + timedelta(seconds=float(countdown))
    if eta is None:
        return None
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta)
    if not isinstance(eta, datetime):
        raise TypeError(f"eta must be a datetime, not {eta!r}")
    return _aware(eta, app).astimezone(UTC)


def check_options(task: Task[Any, Any], options: Mapping[str, Any]) -> None:
    """Refuse unknown or unsupported apply_async options.

    Raises:
        UnsupportedOption, TypeError
    """
    for key, value in options.items():
        if key == "serializer":
            check_option(key, value, {}, f"{task.name}.apply_async")
        if key == "queue" and value not in (None, task.app.conf.task_default_queue):
            raise UnsupportedOption(f"{task.name}.apply_async: queue={value!r} is not supported")
        if key not in _PLUMBING and key not in _KNOWN:
            raise TypeError(f"{task.name}.apply_async: unknown option {key!r}")


def publish(
    task: Task[Any, Any],
    *,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    task_id: str,
    link: list[Signature],
    link_error: list[Signature],
    shadow: str | None,
    options: Mapping[str, Any],
) -> AsyncResult:
    """Send one task message through the Gateway, with the publish signals around it.

    Raises:
        UnsupportedOption: a delay beyond QStash's maximum, or an unsupported option.
        EncodeError: an argument without a Celery-JSON form.
        OperationalError: QStash refused or could not be reached.
    """
    check_options(task, options)
    app = task.app
    flask_app = flask_app_for(app)
    now = datetime.now(UTC)
    eta = _eta_at(options, now, app)
    expires = _expires_at(options.get("expires", task.expires), now, app)
    _check_delay(eta, now, app)
    ignore = bool(options.get("ignore_result", task._ignores_result()))
    time_limit = options.get("time_limit", task.time_limit) or app.conf.task_time_limit
    body = {
        "id": task_id,
        "task": task.name,
        "args": serialization.to_jsonable(list(args)),
        "kwargs": serialization.to_jsonable(kwargs),
        "retries": int(options.get("retries") or 0),
        "eta": eta.isoformat() if eta else None,
        "expires": expires.isoformat() if expires else None,
        "headers": serialization.to_jsonable(dict(options.get("headers") or {})),
        "callbacks": serialization.to_jsonable([dict(s) for s in link]) or None,
        "errbacks": serialization.to_jsonable([dict(s) for s in link_error]) or None,
        "root_id": options.get("root_id") or task_id,
        "parent_id": options.get("parent_id"),
        "ignore_result": ignore,
        "shadow": shadow,
        "timelimit": [time_limit, None],
    }
    _check_size(body, flask_app)
    headers, properties = _protocol_headers(body, args, kwargs)
    queue = options.get("queue") or app.conf.task_default_queue
    message_body = (
        list(args),
        kwargs,
        {
            "callbacks": body["callbacks"],
            "errbacks": body["errbacks"],
            "chain": None,
            "chord": None,
        },
    )
    signals.before_task_publish.send(
        task.name,
        body=message_body,
        exchange="",
        routing_key=queue,
        headers=headers,
        properties=properties,
        declare=[],
        retry_policy=options.get("retry_policy"),
    )
    backend.mark_published(
        flask_app, task_id, name=task.name, args=list(args), kwargs=kwargs, retries=body["retries"]
    )
    message = Message(
        url=task_url(flask_app, task.name),
        body=body,
        not_before=math.ceil(eta.timestamp()) if eta and eta > now else None,
        timeout_s=math.ceil(time_limit) if time_limit else None,
    )
    try:
        published = get_gateway(flask_app).publish(message)
    except QStashError as exc:
        raise OperationalError(f"could not publish {task.name}[{task_id}]: {exc}") from exc
    backend.set_message_id(flask_app, task_id, published.message_id)
    signals.after_task_publish.send(
        task.name, body=message_body, exchange="", routing_key=queue, headers=headers
    )
    result = AsyncResult(task_id, task_name=task.name, app=app)
    result.ignored = ignore
    return result


def _check_size(body: dict[str, Any], flask_app: Flask) -> None:
    limit = flask_app.config.get("MAX_CONTENT_LENGTH")
    size = len(json.dumps(body).encode())
    if limit and size > limit:
        # The task endpoint would answer 413 to every delivery: refuse at the call instead.
        raise UnsupportedOption(
            f"task message of {size} bytes exceeds MAX_CONTENT_LENGTH ({limit}); pass ids, "
            "not payloads"
        )


def _check_delay(eta: datetime | None, now: datetime, app: Celery) -> None:
    if eta is None:
        return
    limit = float(app.conf.qstash_max_delay_s)
    if (eta - now).total_seconds() > limit:
        raise UnsupportedOption(
            f"countdown/eta {eta.isoformat()} is beyond QStash's maximum delay of {limit:g}s "
            "(qstash_max_delay_s / QSTASH_MAX_DELAY_S)"
        )


def _protocol_headers(
    body: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Celery protocol-2 headers and properties, as publish-signal receivers read them."""
    headers = {
        "lang": "py",
        "task": body["task"],
        "id": body["id"],
        "shadow": body["shadow"],
        "eta": body["eta"],
        "expires": body["expires"],
        "group": None,
        "group_index": None,
        "retries": body["retries"],
        "timelimit": body["timelimit"],
        "root_id": body["root_id"],
        "parent_id": body["parent_id"],
        "argsrepr": repr(args),
        "kwargsrepr": repr(kwargs),
        "origin": receiver.hostname,
        "ignore_result": body["ignore_result"],
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    } | dict(body["headers"] or {})
    properties = {"correlation_id": body["id"], "reply_to": None}
    return headers, properties


# -- receiving -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the endpoint answers: HTTP status and JSON (489 = QStash must not retry)."""

    status: int
    body: dict[str, Any]

    @property
    def non_retryable(self) -> bool:
        """Whether QStash should stop redelivering (489 + Upstash-NonRetryable-Error)."""
        return self.status == 489


def receive(
    flask_app: Flask,
    celery: Celery,
    name: str,
    raw_body: bytes,
    *,
    message_id: str | None = None,
    retried: int | None = None,
) -> Answer:
    """Run one QStash delivery of task `name` (signature already verified)."""
    try:
        payload = _parse(raw_body, name)
    except (DecodeError, ValueError) as exc:
        signals.task_rejected.send(receiver, message=raw_body, exc=exc)
        return Answer(489, {"error": f"malformed task message: {exc}"})
    task_id = str(payload.get("id") or message_id or "")
    if not task_id:
        return Answer(489, {"error": "task message has no id"})
    task = celery.tasks.get(name)
    if task is None:
        return _unknown(flask_app, name, task_id, payload)
    request = _request(payload, task_id, message_id, retried)
    return _run(flask_app, task, request, payload)


def _parse(raw_body: bytes, name: str) -> dict[str, Any]:
    try:
        payload = json.loads(raw_body or b"{}")
    except json.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise DecodeError("the body must be a JSON object")
    if payload.get("task") not in (None, name):
        raise DecodeError(f"body names task {payload.get('task')!r}, URL names {name!r}")
    args = serialization.from_jsonable(payload.get("args") or [])
    kwargs = serialization.from_jsonable(payload.get("kwargs") or {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise DecodeError("args must be a list and kwargs an object")
    return payload | {"args": tuple(args), "kwargs": kwargs}


def _unknown(flask_app: Flask, name: str, task_id: str, payload: dict[str, Any]) -> Answer:
    exc = NotRegistered(name)
    backend.store_result(flask_app, task_id, exc, states.FAILURE, name=name)
    signals.task_unknown.send(receiver, name=name, id=task_id, message=payload, exc=exc)
    log.error("received unregistered task %r (id %s)", name, task_id)
    return Answer(489, {"error": f"task {name!r} is not registered", "id": task_id})


def _request(
    payload: dict[str, Any], task_id: str, message_id: str | None, retried: int | None
) -> Context:
    return Context(
        id=task_id,
        task=payload.get("task"),
        args=payload["args"],
        kwargs=payload["kwargs"],
        retries=int(payload.get("retries") or 0),
        is_eager=False,
        called_directly=False,
        eta=payload.get("eta"),
        expires=payload.get("expires"),
        headers=serialization.from_jsonable(payload.get("headers") or {}),
        correlation_id=task_id,
        root_id=payload.get("root_id") or task_id,
        parent_id=payload.get("parent_id"),
        callbacks=serialization.from_jsonable(payload.get("callbacks")),
        errbacks=serialization.from_jsonable(payload.get("errbacks")),
        ignore_result=bool(payload.get("ignore_result")),
        delivery_info={"is_eager": False, "priority": None, "routing_key": None},
        hostname=receiver.hostname,
        origin=None,
        shadow=payload.get("shadow"),
        timelimit=tuple(payload.get("timelimit") or (None, None)),
        qstash_message_id=message_id,
        qstash_retried=retried,
    )


def _run(
    flask_app: Flask, task: Task[Any, Any], request: Context, payload: dict[str, Any]
) -> Answer:
    from flask_app.shim.tracer import trace

    task_id = request.id or ""
    meta = backend.get(flask_app, task_id)
    if meta is not None and meta.state in (states.SUCCESS, states.FAILURE):
        # QStash is at-least-once: a finished id runs nothing again.
        return Answer(200, {"id": task_id, "state": meta.state, "duplicate": True})
    if meta is not None and meta.revoked:
        return _discard(flask_app, task, request, expired=False)
    if request.expires and datetime.fromisoformat(request.expires) < datetime.now(UTC):
        return _discard(flask_app, task, request, expired=True)
    if meta is not None and meta.state == states.REVOKED:
        return Answer(200, {"id": task_id, "state": meta.state, "duplicate": True})
    if meta is not None and meta.retries > request.retries:
        return Answer(200, {"id": task_id, "state": meta.state, "stale": True})
    signals.task_received.send(receiver, request=request)
    outcome = trace(task, request, eager=False, throw=False)
    if isinstance(outcome.retval, Reject) and outcome.retval.requeue:
        # Celery puts the message back; the nearest over QStash is a non-2xx: it redelivers.
        return Answer(409, {"error": "task rejected with requeue=True", "id": task_id})
    return Answer(200, {"id": task_id, "state": outcome.state})


def _discard(flask_app: Flask, task: Task[Any, Any], request: Context, *, expired: bool) -> Answer:
    task_id = request.id or ""
    reason = TaskRevokedError("expired" if expired else "revoked")
    backend.store_result(flask_app, task_id, reason, states.REVOKED, name=task.name)
    signals.task_revoked.send(task, request=request, terminated=False, signum=None, expired=expired)
    return Answer(200, {"id": task_id, "state": states.REVOKED, "expired": expired})
