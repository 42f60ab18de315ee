"""Process-wide state: the current app, the shared task registry, the running task."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask_app.shim.app import Celery
    from flask_app.shim.task import Task

shared_tasks: dict[str, Task[Any, Any]] = {}
_lock = threading.Lock()
_current: list[Celery] = []
_default: list[Celery] = []
_local = threading.local()
_factory: list[Callable[[], Celery]] = []


def set_app_factory(factory: Callable[[], Celery]) -> None:
    """How to make the default app on first use (flask_app.shim.app registers Celery)."""
    _factory[:] = [factory]


def set_current(app: Celery) -> None:
    """Make app the one `shared_task` tasks and `current_app` use."""
    _current[:] = [app]


def set_default(app: Celery) -> None:
    """Make app the default (used when no app was made current)."""
    _default[:] = [app]


def get_current_app() -> Celery:
    """The current app, else the default one (created on first use)."""
    if _current:
        return _current[0]
    with _lock:
        if not _default:
            _default.append(_factory[0]())
        return _default[0]


def task_stack() -> list[Task[Any, Any]]:
    """This thread's stack of running tasks (top = current_task)."""
    stack: list[Task[Any, Any]] | None = getattr(_local, "tasks", None)
    if stack is None:
        stack = _local.tasks = []
    return stack


def get_current_task() -> Task[Any, Any] | None:
    """The task running in this thread, if any."""
    stack = task_stack()
    return stack[-1] if stack else None
