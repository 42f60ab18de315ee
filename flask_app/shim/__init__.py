"""A Celery-compatible task API over QStash: port Celery code by changing imports only.

    from flask_app.shim import Celery, shared_task, Task, AsyncResult, states
    from flask_app.shim.signals import task_success
    from flask_app.shim.schedules import crontab

Tasks are delivered to `POST /api/qstash/tasks/<task_name>`; results live in the app's database.
See docs/shim.md for what maps 1:1 and what differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.local import LocalProxy

from flask_app.shim import states
from flask_app.shim._state import get_current_app, get_current_task
from flask_app.shim.app import Celery, shared_task
from flask_app.shim.exceptions import UnsupportedOption
from flask_app.shim.flask import init_app
from flask_app.shim.result import AsyncResult, EagerResult
from flask_app.shim.task import Signature, Task, signature, uuid

if TYPE_CHECKING:
    from flask_app.shim.app import Celery as _Celery
    from flask_app.shim.task import Task as _Task

current_app: _Celery = LocalProxy(get_current_app)  # type: ignore[assignment]
current_task: _Task[Any, Any] | None = LocalProxy(get_current_task)  # type: ignore[assignment]


def _canvas(name: str) -> Any:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise UnsupportedOption(f"{name}() is not supported by the shim (QStash has no fan-in)")

    refuse.__name__ = name
    return refuse


chain = _canvas("chain")
group = _canvas("group")
chord = _canvas("chord")
chunks = _canvas("chunks")
xmap = _canvas("xmap")
xstarmap = _canvas("xstarmap")

__all__ = [
    "AsyncResult",
    "Celery",
    "EagerResult",
    "Signature",
    "Task",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "current_task",
    "group",
    "init_app",
    "shared_task",
    "signature",
    "states",
    "uuid",
    "xmap",
    "xstarmap",
]
