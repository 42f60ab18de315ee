"""The app object (`celery.Celery`): settings, the task registry and the Flask binding."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any, Concatenate, Literal, TypeVar, overload
from zoneinfo import ZoneInfo

from flask import Flask

from flask_app.shim import _state
from flask_app.shim.canvas import Signature
from flask_app.shim.conf import DEFAULTS, MAX_DELAY_S, Conf, from_rate_limit
from flask_app.shim.exceptions import UnsupportedOption
from flask_app.shim.flask import init_app as _init_flask_app
from flask_app.shim.options import T3_TASK_OPTIONS, check_option
from flask_app.shim.result import AsyncResult
from flask_app.shim.task import P, R, Task, add_autoretry_behaviour

if TYPE_CHECKING:
    from flask_app.shim.plugs import Plugs

__all__ = ["DEFAULTS", "MAX_DELAY_S", "Celery", "Conf", "create_task", "shared_task"]

T = TypeVar("T")

# Task options accepted by the decorator and ignored (registration mechanics).
_MECHANICS = {"shared", "lazy", "filter", "trail", "typing"}


class Control:
    """`app.control`: revoke by id (no remote control of workers)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def revoke(
        self,
        task_id: str | list[str],
        destination: Any = None,
        terminate: bool = False,
        signal: Any = None,
        **kwargs: Any,
    ) -> None:
        """Revoke one id or a list of ids (cancel pending QStash messages).

        Raises:
            UnsupportedOption: terminate=True.
        """
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        for one in ids:
            self.app.AsyncResult(one).revoke(terminate=terminate, signal=signal)


class Celery:
    """A shim app: `Celery(main, task_cls=..., strict_typing=True)`; broker args are ignored."""

    def __init__(
        self,
        main: str | None = None,
        loader: Any = None,
        backend: Any = None,
        amqp: Any = None,
        events: Any = None,
        log: Any = None,
        control: Any = None,
        set_as_current: bool = True,
        tasks: Any = None,
        broker: Any = None,
        include: Any = None,
        changes: Any = None,
        config_source: Any = None,
        fixups: Any = None,
        task_cls: type[Task[Any, Any]] | str | None = None,
        autofinalize: bool = True,
        namespace: str | None = None,
        strict_typing: bool = True,
        **kwargs: Any,
    ) -> None:
        self.main = main
        self.conf = Conf(DEFAULTS)
        self.conf["beat_schedule"] = {}
        if include:
            self.conf["include"] = tuple(include)
        self.task_cls: type[Task[Any, Any]] = _resolve_task_cls(task_cls)
        self.strict_typing = strict_typing
        self.namespace = namespace
        self._tasks: dict[str, Task[Any, Any]] = {}
        self.flask_app: Flask | None = None
        self.control = Control(self)
        if config_source is not None:
            self.config_from_object(config_source, namespace=namespace)
        if set_as_current:
            _state.set_current(self)

    def __repr__(self) -> str:
        return f"<Celery {self.main}>"

    # -- settings ------------------------------------------------------------------------------

    def config_from_object(self, obj: Any, namespace: str | None = None, **kwargs: Any) -> None:
        """Load settings from a module (or its dotted name), a dict or an object."""
        if isinstance(obj, str):
            obj = _import_object(obj)
        items = obj.items() if isinstance(obj, Mapping) else vars(obj).items()
        prefix = f"{namespace}_" if namespace else None
        for key, value in items:
            if prefix:
                if not key.startswith(prefix):
                    continue
                key = key[len(prefix) :].lower()
            elif not key.islower() or key.startswith("_") or isinstance(value, ModuleType):
                continue
            self.conf[key] = value

    def set_default(self) -> None:
        """Make this the app `shared_task` tasks bind to."""
        _state.set_current(self)

    def now(self) -> datetime:
        """Aware now in the app's timezone."""
        return datetime.now(UTC).astimezone(self.tzinfo)

    @property
    def tzinfo(self) -> Any:
        """The app timezone (UTC when unset)."""
        name = self.conf.get("timezone")
        return ZoneInfo(name) if name else UTC

    # -- tasks ----------------------------------------------------------------------------------

    @property
    def tasks(self) -> dict[str, Task[Any, Any]]:
        """Registry: name -> task (shared tasks and this app's own)."""
        return _state.shared_tasks | self._tasks

    def task(self, *args: Any, **opts: Any) -> Any:
        """Task decorator bound to this app (bare or with options)."""
        if len(args) == 1 and callable(args[0]) and not opts:
            return self._task_from_fun(args[0])
        if args:
            raise TypeError("task() takes the function or keyword options only")
        return lambda fun: self._task_from_fun(fun, **opts)

    def _task_from_fun(self, fun: Callable[..., Any], **opts: Any) -> Task[Any, Any]:
        return create_task(fun, registry=self._tasks, app=self, default_base=self.task_cls, **opts)

    def register_task(self, task: Task[Any, Any] | type[Task[Any, Any]]) -> Task[Any, Any]:
        """Register a class-based task (instance or class)."""
        instance = task() if isinstance(task, type) else task
        instance._app = self
        if not instance.name:
            instance.name = f"{type(instance).__module__}.{type(instance).__name__}"
        return self._tasks.setdefault(instance.name, instance)

    def autodiscover_tasks(
        self, packages: Any = None, related_name: str = "tasks", force: bool = False
    ) -> None:
        """Import `<package>.<related_name>` for each package so its tasks register."""
        for package in packages() if callable(packages) else packages or ():
            module = f"{package}.{related_name}" if related_name else package
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:
                    raise

    def import_task_modules(self) -> None:
        """Import the modules in conf.imports and conf.include."""
        for module in (*_names(self.conf.get("imports")), *_names(self.conf.get("include"))):
            importlib.import_module(module)

    # -- sending and results -----------------------------------------------------------------

    def send_task(
        self, name: str, args: Any = None, kwargs: Any = None, **options: Any
    ) -> AsyncResult:
        """Send a task by name (it must be registered in the process that receives it)."""
        task = self.tasks.get(name) or _unregistered(self, name)
        return task.apply_async(args, kwargs, **options)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:  # noqa: N802
        """Result handle bound to this app."""
        return AsyncResult(task_id, app=self, **kwargs)

    def signature(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature bound to this app."""
        kwargs["app"] = self
        return Signature(*args, **kwargs)

    def add_periodic_task(
        self,
        schedule: Any,
        sig: Signature,
        args: Any = (),
        kwargs: Any = (),
        name: str | None = None,
        **opts: Any,
    ) -> str:
        """Add a beat_schedule entry for a signature; returns the entry name."""
        key = name or repr(sig)
        self.conf.beat_schedule[key] = {
            "task": sig.name,
            "schedule": schedule,
            "args": tuple(args) or sig.args,
            "kwargs": dict(kwargs) or sig.kwargs,
            "options": sig.options | opts,
        }
        return key

    # -- Flask ----------------------------------------------------------------------------------

    def init_app(self, flask_app: Flask, *, plugs: Plugs | None = None) -> None:
        """Bind to a Flask app: settings from its config, task modules, endpoint, CLI."""
        _init_flask_app(flask_app, self, plugs=plugs)


def _names(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _import_object(path: str) -> Any:
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


def _resolve_task_cls(task_cls: type[Task[Any, Any]] | str | None) -> type[Task[Any, Any]]:
    if task_cls is None:
        return Task
    if isinstance(task_cls, str):
        module, _, name = task_cls.rpartition(".")
        resolved: type[Task[Any, Any]] = getattr(importlib.import_module(module), name)
        return resolved
    return task_cls


def _unregistered(app: Celery, name: str) -> Task[Any, Any]:
    """A stand-in to send a task known only by name (no argument check)."""
    stub: type[Task[Any, Any]] = type(name, (Task,), {"name": name, "typing": False, "_app": app})
    return stub()


def _task_name(fun: Callable[..., Any], app: Celery | None) -> str:
    module = fun.__module__
    if module == "__main__" and app is not None and app.main:
        module = app.main
    return f"{module}.{fun.__name__}"


def create_task(
    fun: Callable[..., Any],
    *,
    registry: dict[str, Task[Any, Any]],
    app: Celery | None,
    default_base: type[Task[Any, Any]],
    **opts: Any,
) -> Task[Any, Any]:
    """Build and register the task object for a function (the first of a name wins).

    Raises:
        UnsupportedOption: an option the shim cannot honour.
        TypeError: an unknown option.
    """
    base = opts.pop("base", None) or default_base
    bind = bool(opts.pop("bind", False))
    for key, value in list(opts.items()):
        check_option(key, value, T3_TASK_OPTIONS, f"task {fun.__name__}")
        if key in _MECHANICS and key != "typing":
            opts.pop(key)
        elif key not in _MECHANICS and not hasattr(base, key) and key != "name":
            raise TypeError(f"task {fun.__name__}: unknown option {key!r}")
    for key in T3_TASK_OPTIONS:  # class attributes of a base count too
        check_option(key, getattr(base, key, None), T3_TASK_OPTIONS, f"base {base.__name__}")
    rate_limit = opts.get("rate_limit", getattr(base, "rate_limit", None))
    if rate_limit:  # becomes QStash flow control: refuse what it cannot express, at once
        from_rate_limit(rate_limit, f"task {fun.__name__}")
    _check_queue(opts.get("queue", getattr(base, "queue", None)), app)
    name = opts.pop("name", None) or _task_name(fun, app)
    if name in registry:
        return registry[name]
    attrs: dict[str, Any] = {
        "name": name,
        "run": fun if bind else staticmethod(fun),
        "_app": app,
        "__doc__": fun.__doc__,
        "__module__": fun.__module__,
        "__wrapped__": fun,
        "__qualname__": fun.__qualname__,
        "_bound_to_self": bind,
        **opts,
    }
    task: Task[Any, Any] = type(fun.__name__, (base,), attrs)()
    add_autoretry_behaviour(task)
    registry[name] = task
    return task


def _check_queue(queue: Any, app: Celery | None) -> None:
    if queue is None:
        return
    default = (app.conf if app else _state.get_current_app().conf).get("task_default_queue")
    if queue != default:
        raise UnsupportedOption(
            f"queue={queue!r}: routing to named queues is not supported (every task is "
            "delivered to the app's task endpoint)"
        )


@overload
def shared_task(fun: Callable[P, R]) -> Task[P, R]: ...
@overload
def shared_task(
    *, bind: Literal[True], **opts: Any
) -> Callable[[Callable[Concatenate[Any, P], R]], Task[P, R]]: ...
@overload
def shared_task(
    *, bind: Literal[False] = ..., **opts: Any
) -> Callable[[Callable[P, R]], Task[P, R]]: ...
def shared_task(fun: Any = None, **opts: Any) -> Any:
    """Task decorator bound to the current app (`@shared_task` or `@shared_task(**opts)`)."""
    if fun is not None and callable(fun) and not opts:
        return _shared(fun)
    if fun is not None:
        raise TypeError("shared_task() takes the function or keyword options only")
    return lambda f: _shared(f, **opts)


def _shared(fun: Callable[..., Any], **opts: Any) -> Task[Any, Any]:
    base = opts.get("base") or _state.get_current_app().task_cls
    opts["base"] = base
    return create_task(fun, registry=_state.shared_tasks, app=None, default_base=base, **opts)


_state.set_app_factory(lambda: Celery("default", set_as_current=False))
