"""A Celery-compatible task API over QStash: port Celery code by changing imports only.

    from flask_app.shim import Celery, shared_task, Task, AsyncResult, states, chain, group, chord
    from flask_app.shim.signals import task_success
    from flask_app.shim.schedules import crontab

Tasks are delivered to `POST /api/qstash/tasks/<task_name>`; results live in the shim's tables
(`flask_app.shim.models`). The shim imports nothing of the app that hosts it: the app hands it a
publisher, a database and a request verifier (`flask_app.shim.plugs.Plugs`) through `init_app`.
See docs/shim.md for what maps 1:1 and what differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.local import LocalProxy

from flask_app.shim import builtins as _builtins  # noqa: F401 - registers celery.backend_cleanup
from flask_app.shim import states
from flask_app.shim._state import get_current_app, get_current_task
from flask_app.shim.app import Celery, shared_task
from flask_app.shim.canvas import (
    Signature,
    chain,
    chord,
    group,
    maybe_signature,
    signature,
)
from flask_app.shim.exceptions import UnsupportedOption
from flask_app.shim.flask import init_app
from flask_app.shim.ids import uuid
from flask_app.shim.plugs import Plugs
from flask_app.shim.result import AsyncResult, EagerResult, GroupResult, ResultSet
from flask_app.shim.task import Task

if TYPE_CHECKING:
    from flask_app.shim.app import Celery as _Celery
    from flask_app.shim.task import Task as _Task

current_app: _Celery = LocalProxy(get_current_app)  # type: ignore[assignment]
current_task: _Task[Any, Any] | None = LocalProxy(get_current_task)  # type: ignore[assignment]


def _refused(name: str) -> Any:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise UnsupportedOption(
            f"{name}() is not supported by the shim (chain, group and chord are)"
        )

    refuse.__name__ = name
    return refuse


chunks = _refused("chunks")
xmap = _refused("xmap")
xstarmap = _refused("xstarmap")

__all__ = [
    "AsyncResult",
    "Celery",
    "EagerResult",
    "GroupResult",
    "Plugs",
    "ResultSet",
    "Signature",
    "Task",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "current_task",
    "group",
    "init_app",
    "maybe_signature",
    "shared_task",
    "signature",
    "states",
    "uuid",
    "xmap",
    "xstarmap",
]
