"""QStash delivery of shim tasks: a sent task -> one message; a delivery -> at most one run.

Message body (JSON, args/kwargs in Celery-JSON): `{"id", "task", "args", "kwargs", "retries",
"eta", "expires", "headers", "callbacks", "errbacks", "root_id", "parent_id", "ignore_result",
"shadow", "timelimit", "group", "group_index", "chord", "chain"}`. A schedule's body has no "id":
each firing uses its QStash message id. Every message carries the deduplication id
`<task id>-<retries>`, so QStash drops a second publish of the same attempt.

QStash delivers at least once: a delivery runs the body only after it claimed the task's
attempt in the database (one conditional UPDATE with a lease the run renews while it goes on).
A duplicate delivery answers 200 without running; a delivery after a crashed run's lease
lapsed takes the run over.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flask import Flask

from flask_app.shim import backend, continuation, serialization, signals, states
from flask_app.shim.binding import flask_app_for, get_plugs
from flask_app.shim.canvas import Signature
from flask_app.shim.conf import from_rate_limit
from flask_app.shim.exceptions import (
    DecodeError,
    NotRegistered,
    OperationalError,
    Reject,
    TaskRevokedError,
    UnsupportedOption,
)
from flask_app.shim.ids import uuid
from flask_app.shim.options import check_option
from flask_app.shim.plugs import FlowControl, TaskMessage
from flask_app.shim.request import Context
from flask_app.shim.result import AsyncResult
from flask_app.shim.tracer import trace

if TYPE_CHECKING:
    from flask_app.shim.app import Celery
    from flask_app.shim.task import Task

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
    # set by the canvas on the steps it sends (frozen ids, the chain's next steps)
    "chain",
    "group_id",
    "group_index",
    "chord",
    "reply_to",
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
    if not isinstance(options.get("chord") or "", str):
        raise TypeError(f"{task.name}.apply_async: chord must be a chord's group id")
    if not isinstance(options.get("chain") or [], list):
        raise TypeError(f"{task.name}.apply_async: chain must be a list of signatures")


def flow_control(task: Task[Any, Any]) -> FlowControl | None:
    """QStash flow control for the task's rate_limit (one key per task name: global).

    Raises:
        UnsupportedOption: a rate_limit QStash cannot express.
    """
    limit = task.rate_limit or task.app.conf.get("task_default_rate_limit")
    if not limit:
        return None
    rate, period_s = from_rate_limit(limit, f"task {task.name}")
    return FlowControl(key=flow_control_key(task.name), rate=rate, period_s=period_s)


def flow_control_key(name: str) -> str:
    """The flow-control key of a task name (letters, digits, '.', '_', '-')."""
    return "celery-rate." + re.sub(r"[^A-Za-z0-9._-]", "_", name)


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
        "group": options.get("group_id"),
        "group_index": options.get("group_index"),
        "chord": options.get("chord"),
        "chain": serialization.to_jsonable(list(options.get("chain") or [])) or None,
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
            "chain": body["chain"],
            "chord": body["chord"],
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
    message = TaskMessage(
        url=task_url(flask_app, task.name),
        body=body,
        not_before=math.ceil(eta.timestamp()) if eta and eta > now else None,
        timeout_s=math.ceil(time_limit) if time_limit else None,
        deduplication_id=deduplication_id(task_id, body["retries"]),
        flow_control=flow_control(task),
    )
    try:
        message_id = get_plugs(flask_app).publisher.publish(message)
    except Exception as exc:  # the publisher's own errors: Celery calls them OperationalError
        raise OperationalError(f"could not publish {task.name}[{task_id}]: {exc}") from exc
    backend.set_message_id(flask_app, task_id, message_id)
    signals.after_task_publish.send(
        task.name, body=message_body, exchange="", routing_key=queue, headers=headers
    )
    result = AsyncResult(task_id, task_name=task.name, app=app)
    result.ignored = ignore
    return result


def deduplication_id(task_id: str, retries: int) -> str:
    """One id per task attempt: QStash keeps the first publish of it and drops the others."""
    return f"{task_id}-{retries}"


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
        "group": body["group"],
        "group_index": body["group_index"],
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
        group=payload.get("group"),
        group_index=payload.get("group_index"),
        chord=payload.get("chord"),
        chain=serialization.from_jsonable(payload.get("chain")) or None,
        qstash_message_id=message_id,
        qstash_retried=retried,
    )


def _run(
    flask_app: Flask, task: Task[Any, Any], request: Context, payload: dict[str, Any]
) -> Answer:
    """Claim the attempt, run it once with the trace, then its canvas continuation."""
    task_id = request.id or ""
    settled = _settled(flask_app, task, request)
    if settled is not None:
        return settled
    owner = f"{receiver.hostname}:{os.getpid()}:{uuid()}"
    lease = timedelta(seconds=float(task.app.conf.task_lease_seconds))
    claimed = backend.claim(
        flask_app,
        task_id,
        attempt=request.retries,
        owner=owner,
        name=task.name,
        now=datetime.now(UTC),
        lease=lease,
    )
    if not claimed:  # another delivery got there first (or finished meanwhile)
        return _settled(flask_app, task, request) or Answer(
            200, {"id": task_id, "state": states.STARTED, "running": True}
        )
    done_attempt: int | None = None
    try:
        with _renewing(flask_app, task_id, owner, lease):
            signals.task_received.send(receiver, request=request)
            outcome = trace(task, request, eager=False, throw=False)
        if isinstance(outcome.retval, Reject) and outcome.retval.requeue:
            # Celery puts the message back; the nearest over QStash is a non-2xx: it redelivers.
            return Answer(409, {"error": "task rejected with requeue=True", "id": task_id})
        done_attempt = request.retries
        return _proceed(flask_app, task, request, outcome.state, outcome.retval, outcome.traceback)
    finally:
        backend.release(flask_app, task_id, owner, done_attempt=done_attempt)


def _settled(flask_app: Flask, task: Task[Any, Any], request: Context) -> Answer | None:
    """The answer for a delivery that must not run the body, or None (it may claim the run)."""
    task_id = request.id or ""
    meta = backend.get(flask_app, task_id)
    now = datetime.now(UTC)
    if meta is not None and meta.state in (states.SUCCESS, states.FAILURE):
        # A finished id runs nothing again; what follows it (chain, chord) is sent again,
        # idempotently, in case the run that finished could not send it.
        state, value = meta.state, meta.result
        answer = _proceed(flask_app, task, request, state, value, meta.traceback)
        return answer if answer.status != 200 else _duplicate(task_id, meta.state)
    if meta is not None and meta.is_leased(now) and (meta.lease_attempt or 0) >= request.retries:
        return Answer(200, {"id": task_id, "state": meta.state, "running": True})
    if meta is not None and meta.revoked:
        return _discard(flask_app, task, request, expired=False)
    if request.expires and datetime.fromisoformat(request.expires) < now:
        return _discard(flask_app, task, request, expired=True)
    if meta is not None and meta.state == states.REVOKED:
        return _duplicate(task_id, meta.state)
    if meta is not None and meta.retries > request.retries:
        return Answer(200, {"id": task_id, "state": meta.state, "stale": True})
    if meta is not None and meta.is_done(request.retries):
        return _duplicate(task_id, meta.state)
    return None


def _duplicate(task_id: str, state: str) -> Answer:
    return Answer(200, {"id": task_id, "state": state, "duplicate": True})


def _proceed(
    flask_app: Flask,
    task: Task[Any, Any],
    request: Context,
    state: str | None,
    value: Any,
    traceback: str | None,
) -> Answer:
    """Send what follows the run (chain, chord); 503 when QStash can't take it yet."""
    task_id = request.id or ""
    try:
        continuation.proceed(flask_app, task.app, request, state, value, traceback)
    except OperationalError as exc:
        # The run is stored; QStash redelivers this message and the duplicate sends it again.
        log.warning("task %s[%s]: could not send what follows: %s", task.name, task_id, exc)
        return Answer(503, {"error": str(exc), "id": task_id})
    return Answer(200, {"id": task_id, "state": state})


@contextmanager
def _renewing(flask_app: Flask, task_id: str, owner: str, lease: timedelta) -> Iterator[None]:
    """Renew the run's lease every third of its length until the block ends."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease.total_seconds() / 3):
            try:
                backend.renew(flask_app, task_id, owner, datetime.now(UTC) + lease)
            except Exception:  # a missed renewal only shortens the lease; the next one retries
                log.warning("could not renew the lease of %s", task_id, exc_info=True)

    thread = threading.Thread(target=renew, name=f"lease-{task_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _discard(flask_app: Flask, task: Task[Any, Any], request: Context, *, expired: bool) -> Answer:
    task_id = request.id or ""
    reason = TaskRevokedError("expired" if expired else "revoked")
    backend.store_result(flask_app, task_id, reason, states.REVOKED, name=task.name)
    signals.task_revoked.send(task, request=request, terminated=False, signum=None, expired=expired)
    answer = _proceed(flask_app, task, request, states.REVOKED, reason, None)
    if answer.status != 200:
        return answer
    return Answer(200, {"id": task_id, "state": states.REVOKED, "expired": expired})
