"""The task object (`celery.Task`), its request context and `.s()`/`.si()` signatures."""

from __future__ import annotations

import inspect
import random
import sys
import threading
import traceback as tb_module
import uuid as uuid_module
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NoReturn, ParamSpec, TypeVar

from flask_app.shim import _state, serialization
from flask_app.shim.exceptions import (
    Ignore,
    MaxRetriesExceededError,
    NotRegistered,
    Retry,
    UnsupportedOption,
)

if TYPE_CHECKING:
    from flask_app.shim.app import Celery
    from flask_app.shim.result import AsyncResult, EagerResult

P = ParamSpec("P")
R = TypeVar("R")


def uuid() -> str:
    """A new task id (uuid4 string), as `celery.uuid`."""
    return str(uuid_module.uuid4())


class Context:
    """`self.request`: the execution context of one task run."""

    id: str | None = None
    task: str | None = None
    args: Any = ()
    kwargs: Any = None
    retries: int = 0
    is_eager: bool = False
    called_directly: bool = True
    eta: str | None = None
    expires: str | None = None
    headers: dict[str, Any] | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    callbacks: list[dict[str, Any]] | None = None
    errbacks: list[dict[str, Any]] | None = None
    delivery_info: dict[str, Any] | None = None
    hostname: str | None = None
    origin: str | None = None
    timelimit: tuple[float | None, float | None] = (None, None)
    ignore_result: bool = False
    shadow: str | None = None
    group: None = None
    group_index: None = None
    chord: None = None
    chain: None = None
    # QStash's own redelivery count (Upstash-Retried), kept apart from Celery's `retries`.
    qstash_retried: int | None = None
    qstash_message_id: str | None = None

    def __init__(self, **fields: Any) -> None:
        self.kwargs = {}
        self.delivery_info = {}
        for key, value in fields.items():
            setattr(self, key, value)

    @property
    def name(self) -> str | None:
        """The task name (the worker Request's `.name`)."""
        return self.task

    def get(self, key: str, default: Any = None) -> Any:
        """Attribute access with a default."""
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
        keys = [k for k in dir(type(self)) if not k.startswith("_") and k not in _METHODS]
        return {k: getattr(self, k) for k in keys}

    def __repr__(self) -> str:
        return f"<Context: id={self.id!r} task={self.task!r} retries={self.retries}>"


_METHODS = {"get", "as_dict", "name"}


class ExceptionInfo:
    """Celery's `einfo`: the exception, its type, traceback object and text."""

    def __init__(self, exc: BaseException, tb: TracebackType | None = None) -> None:
        self.exception = exc
        self.type = type(exc)
        self.tb = tb if tb is not None else exc.__traceback__
        self.traceback = "".join(tb_module.format_exception(self.type, exc, self.tb))

    def __str__(self) -> str:
        return self.traceback


class Signature(dict[str, Any]):
    """A call description (`task.s()` / `task.si()`), used as `link` / `link_error`."""

    def __init__(
        self,
        task: str | Mapping[str, Any] | Task[Any, Any],
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
        subtask_type: str | None = None,
        app: Celery | None = None,
        **extra: Any,
    ) -> None:
        if isinstance(task, Mapping):
            super().__init__(task)
            self.setdefault("args", [])
            self.setdefault("kwargs", {})
            self.setdefault("options", {})
            self.setdefault("immutable", False)
        else:
            name = task.name if isinstance(task, Task) else str(task)
            super().__init__(
                task=name,
                args=list(args or ()),
                kwargs=dict(kwargs or {}),
                options=dict(options or {}) | extra,
                immutable=immutable,
                subtask_type=subtask_type,
            )
        if self.get("subtask_type"):
            raise UnsupportedOption(
                f"canvas signature {self['subtask_type']!r} is not supported by the shim"
            )
        self._app = app

    @property
    def name(self) -> str:
        """The task name."""
        return str(self["task"])

    @property
    def args(self) -> tuple[Any, ...]:
        """Partial positional arguments."""
        return tuple(self["args"])

    @property
    def kwargs(self) -> dict[str, Any]:
        """Partial keyword arguments."""
        return dict(self["kwargs"])

    @property
    def options(self) -> dict[str, Any]:
        """apply_async options."""
        return dict(self["options"])

    @property
    def immutable(self) -> bool:
        """Whether parent results are *not* prepended."""
        return bool(self["immutable"])

    @property
    def type(self) -> Task[Any, Any]:
        """The registered task.

        Raises:
            NotRegistered
        """
        app = self._app or _state.get_current_app()
        task = app.tasks.get(self.name)
        if task is None:
            raise NotRegistered(self.name)
        return task

    def _merge(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self.immutable:
            return self.args, self.kwargs
        return tuple(args) + self.args, self.kwargs | dict(kwargs or {})

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send the described call (partial args after the given ones)."""
        merged_args, merged_kwargs = self._merge(args, kwargs)
        return self.type.apply_async(merged_args, merged_kwargs, **(self.options | options))

    def apply(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> EagerResult:
        """Run the described call locally."""
        merged_args, merged_kwargs = self._merge(args, kwargs)
        return self.type.apply(merged_args, merged_kwargs, **(self.options | options))

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """apply_async with star arguments."""
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        merged_args, merged_kwargs = self._merge(args, kwargs)
        return self.type(*merged_args, **merged_kwargs)

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Add options (in place), as Celery."""
        if immutable is not None:
            self["immutable"] = immutable
        self["options"] = self.options | options
        return self

    def clone(self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Signature:
        """A copy with more partial arguments."""
        merged_args, merged_kwargs = self._merge(args, kwargs)
        return Signature(
            self.name, merged_args, merged_kwargs, self.options, self.immutable, app=self._app
        )

    def __or__(self, other: Any) -> NoReturn:
        raise UnsupportedOption("chains (sig | sig) are not supported by the shim; use link=")

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)}){'!' if self.immutable else ''}"


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """`celery.signature`: from a dict, a Signature, or a task name."""
    if isinstance(varies, Signature):
        return varies.clone()
    return Signature(varies, *args, **kwargs)


def maybe_signatures(value: Any) -> list[Signature]:
    """link/link_error values as a list of Signatures."""
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    out = []
    for item in items:
        if not isinstance(item, Mapping):
            raise TypeError(f"link/link_error takes signatures (task.s()), not {item!r}")
        out.append(item if isinstance(item, Signature) else Signature(item))
    return out


# Options the shim cannot honour over QStash: rejected when the decorator or call sees them.
T3_TASK_OPTIONS = {
    "soft_time_limit": "soft time limits have no safe equivalent under WSGI",
    "priority": "QStash has no message priorities",
    "reject_on_worker_lost": "QStash redelivers on timeout or 5xx regardless",
    "rate_limit": "use QStash flow control (global, not per worker) on the publisher instead",
}
T3_CALL_OPTIONS = T3_TASK_OPTIONS | {
    "chord": "chords are not supported",
    "group_id": "groups are not supported",
    "chain": "chains are not supported",
    "replaced_task_nesting": "task replacement is not supported",
}


def check_option(key: str, value: Any, table: Mapping[str, str], where: str) -> None:
    """Refuse a T3 option with a set value.

    Raises:
        UnsupportedOption
    """
    if key in table and value not in (None, False):
        raise UnsupportedOption(f"{where}: {key}={value!r} is not supported: {table[key]}")
    if key == "pydantic" and value:
        raise UnsupportedOption(f"{where}: pydantic=True is not supported by the shim")
    if key in ("serializer", "task_serializer") and value not in (None, "json"):
        raise UnsupportedOption(f"{where}: only the json serializer is supported, not {value!r}")


def exponential_backoff(factor: int, retries: int, maximum: float, full_jitter: bool) -> float:
    """Celery's get_exponential_backoff_interval."""
    countdown = min(maximum, factor * (2**retries))
    if full_jitter:
        countdown = random.randrange(int(countdown) + 1)
    return float(max(0, countdown))


class Task(Generic[P, R]):
    """A task: call it to run inline; delay()/apply_async() to send it; apply() to trace it."""

    name: str = ""
    typing: bool | None = None
    max_retries: int | None = 3
    default_retry_delay: float = 180
    autoretry_for: ClassVar[tuple[type[BaseException], ...]] = ()
    dont_autoretry_for: ClassVar[tuple[type[BaseException], ...]] = ()
    retry_kwargs: ClassVar[dict[str, Any]] = {}
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    ignore_result: bool | None = None
    store_errors_even_if_ignored: bool = False
    track_started: bool | None = None
    acks_late: bool | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    rate_limit: str | None = None
    priority: int | None = None
    reject_on_worker_lost: bool | None = None
    expires: float | datetime | None = None
    queue: str | None = None
    serializer: str = "json"
    throws: ClassVar[tuple[type[BaseException], ...]] = ()
    pydantic: bool = False
    MaxRetriesExceededError = MaxRetriesExceededError
    _app: Celery | None = None
    _bound_to_self: bool = False

    def __init__(self) -> None:
        self._local = threading.local()

    # -- identity --------------------------------------------------------------------------

    @property
    def app(self) -> Celery:
        """The app the task belongs to (shared tasks: the current app)."""
        return self._app or _state.get_current_app()

    @property
    def request(self) -> Context:
        """The current run's context (a direct-call context when idle)."""
        stack = self._request_stack()
        return stack[-1] if stack else Context()

    def _request_stack(self) -> list[Context]:
        if not hasattr(self, "_local"):
            self._local = threading.local()
        stack: list[Context] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    @contextmanager
    def pushed(self, request: Context) -> Iterator[Context]:
        """Make request current (and this task current_task) for the block."""
        self._request_stack().append(request)
        _state.task_stack().append(self)
        try:
            yield request
        finally:
            _state.task_stack().pop()
            self._request_stack().pop()

    def push_request(self, **fields: Any) -> None:
        """Push a request context (Celery's API)."""
        self._request_stack().append(Context(**fields))

    def pop_request(self) -> None:
        """Pop the request context pushed last."""
        self._request_stack().pop()

    def run(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """The body; replaced by the decorated function."""
        raise NotImplementedError("Tasks must define the run method.")

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the body inline (inside the Flask app context) and return its value."""
        from flask_app.shim.app import app_context_for

        self._request_stack()  # creates the thread-local state if a subclass skipped __init__
        if getattr(self._local, "tracing", False):  # the tracer calls a custom __call__
            return self.run(*args, **kwargs)
        request = Context(args=args, kwargs=kwargs, called_directly=True, task=self.name)
        with self.pushed(request), app_context_for(self.app):
            return self.run(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main}>"

    # -- sending ---------------------------------------------------------------------------

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """apply_async(args, kwargs) with no options."""
        return self.apply_async(args, kwargs)

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """delay() once the request's database session commits (now if none is open)."""
        from sqlalchemy import event

        from flask_app.db import get_session

        session = get_session()
        if not session.in_transaction():
            self.delay(*args, **kwargs)
            return
        event.listen(session, "after_commit", lambda _s: self.delay(*args, **kwargs), once=True)

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send the task to QStash (or run it eagerly under task_always_eager).

        Raises:
            TypeError: args/kwargs of the wrong type or not matching the signature.
            UnsupportedOption: an option QStash cannot honour.
            EncodeError: an argument without a Celery-JSON form.
            OperationalError: QStash refused or could not be reached.
        """
        from flask_app.shim import delivery

        args, kwargs = self._checked_call(args, kwargs)
        for key, value in options.items():
            check_option(key, value, T3_CALL_OPTIONS, f"{self.name}.apply_async")
        app = self.app
        if app.conf.task_always_eager:
            args, kwargs = serialization.round_trip([list(args), kwargs])
            return self.apply(
                args,
                kwargs,
                task_id=task_id or uuid(),
                link=link,
                link_error=link_error,
                **_eager_options(options),
            )
        return delivery.publish(
            self,
            args=tuple(args),
            kwargs=dict(kwargs),
            task_id=task_id or uuid(),
            link=maybe_signatures(link),
            link_error=maybe_signatures(link_error),
            shadow=shadow,
            options=options,
        )

    def _checked_call(self, args: Any, kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args = () if args is None else args
        kwargs = {} if kwargs is None else kwargs
        if not isinstance(args, list | tuple):
            raise TypeError("task args must be a list or tuple")
        if not isinstance(kwargs, Mapping):
            raise TypeError("task keyword arguments must be a mapping")
        typing = self.typing if self.typing is not None else self.app.strict_typing
        if typing:
            self._check_signature(tuple(args), dict(kwargs))
        return tuple(args), dict(kwargs)

    def _check_signature(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            sig = inspect.signature(self.run)
        except (TypeError, ValueError):
            return
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}() {exc}") from None

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A mutable signature (receives the parent's result first when linked)."""
        return Signature(self.name, args, kwargs, app=self._app)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature (receives nothing extra when linked)."""
        return Signature(self.name, args, kwargs, immutable=True, app=self._app)

    def signature(
        self, args: Sequence[Any] | None = None, *starargs: Any, **starkwargs: Any
    ) -> Signature:
        """Long form of s()."""
        kwargs = starkwargs.pop("kwargs", None) or {}
        options = starkwargs.pop("options", None) or {}
        return Signature(
            self.name, tuple(args or ()) + starargs, kwargs, options | starkwargs, app=self._app
        )

    subtask = signature

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:  # noqa: N802
        """Result handle for an id of this task."""
        from flask_app.shim.result import AsyncResult

        return AsyncResult(task_id, task_name=self.name, app=self.app, **kwargs)

    # -- running ---------------------------------------------------------------------------

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        link: Any = None,
        link_error: Any = None,
        task_id: str | None = None,
        retries: int | None = None,
        throw: bool | None = None,
        logfile: Any = None,
        loglevel: Any = None,
        headers: dict[str, Any] | None = None,
        **options: Any,
    ) -> EagerResult:
        """Run locally now with the full trace (signals, handlers, links); eager retries re-run.

        Raises:
            the task's exception when throw (default: task_eager_propagates) is set.
        """
        from flask_app.shim.result import EagerResult
        from flask_app.shim.tracer import trace

        args, kwargs = self._checked_call(args, kwargs)
        for key, value in options.items():
            check_option(key, value, T3_CALL_OPTIONS, f"{self.name}.apply")
        if throw is None:
            throw = bool(self.app.conf.task_eager_propagates)
        request = Context(
            id=task_id or uuid(),
            task=self.name,
            args=args,
            kwargs=kwargs,
            retries=retries or 0,
            is_eager=True,
            called_directly=False,
            headers=headers or {},
            callbacks=maybe_signatures(link),
            errbacks=maybe_signatures(link_error),
            delivery_info={"is_eager": True, "priority": None},
            ignore_result=bool(options.get("ignore_result", self._ignores_result())),
        )
        request.root_id = request.correlation_id = request.id
        while True:
            outcome = trace(self, request, eager=True, throw=throw)
            if outcome.state != "RETRY" or throw:
                break
            sig = outcome.retval.sig if isinstance(outcome.retval, Retry) else None
            request = _next_eager_request(request, sig)
        return EagerResult(
            request.id, outcome.retval, outcome.state, traceback=outcome.traceback, name=self.name
        )

    def _ignores_result(self) -> bool:
        if self.ignore_result is not None:
            return bool(self.ignore_result)
        return bool(self.app.conf.task_ignore_result)

    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """Retry this run: same task id, retries + 1 (see Celery's Task.retry).

        Raises:
            Retry: normally (the `raise self.retry(...)` idiom).
            MaxRetriesExceededError, or exc: the limit is reached.
        """
        request = self.request
        retries = request.retries + 1
        limit = self.max_retries if max_retries is None else max_retries
        if request.called_directly:
            _raise_with_context(exc or Retry("Task can be retried", None))
        if not eta and countdown is None:
            countdown = self.default_retry_delay
        sig = self.signature_from_request(request, args, kwargs, retries=retries)
        if limit is not None and retries > limit:
            if exc is not None:
                _raise_with_context(exc)
            raise self.MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{sig.args} kwargs:{sig.kwargs}",
                task_args=list(sig.args),
                task_kwargs=sig.kwargs,
            )
        ret = Retry(exc=exc, when=eta or countdown, is_eager=request.is_eager, sig=sig)
        if not request.is_eager:
            sig.apply_async(countdown=countdown, eta=eta, **options)
        if throw:
            raise ret
        return ret

    def signature_from_request(
        self,
        request: Context,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> Signature:
        """The signature that re-sends this run (same id, links, expires, headers)."""
        options = {
            "task_id": request.id,
            "link": request.callbacks,
            "link_error": request.errbacks,
            "headers": request.headers,
            "expires": request.expires,
            "root_id": request.root_id,
            "parent_id": request.parent_id,
            "ignore_result": request.ignore_result,
        } | extra
        return Signature(
            self.name,
            request.args if args is None else args,
            request.kwargs if kwargs is None else kwargs,
            options,
            app=self._app,
        )

    def update_state(
        self, task_id: str | None = None, state: str | None = None, meta: Any = None, **kw: Any
    ) -> None:
        """Store a custom state (e.g. PROGRESS) and meta for this (or the given) task id."""
        from flask_app.shim import backend
        from flask_app.shim.app import flask_app_for

        task_id = task_id or self.request.id
        if task_id is None:
            raise ValueError("update_state needs a task id (none outside a task run)")
        backend.store_result(
            flask_app_for(self.app), task_id, meta, state or "PENDING", name=self.name
        )

    # -- handlers (override in a base class) ------------------------------------------------

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Before the body runs (after task_prerun)."""

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        """After SUCCESS is stored, before task_success."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> None:
        """After FAILURE is stored, before task_failure."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: ExceptionInfo
    ) -> None:
        """After RETRY is stored, before task_retry."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: Any,
        kwargs: Any,
        einfo: ExceptionInfo | None,
    ) -> None:
        """After success or failure (not retry/ignore/reject), before task_postrun."""

    # -- T3 -----------------------------------------------------------------------------------

    def _unsupported(self, *_a: Any, **_k: Any) -> NoReturn:
        raise UnsupportedOption("canvas and events are not supported by the shim")

    replace = add_to_chord = chunks = map = starmap = send_event = _unsupported


def _raise_with_context(exc: BaseException) -> NoReturn:
    current = sys.exc_info()[1]
    if current is not None and current is not exc:
        raise exc from current
    raise exc


def _eager_options(options: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("headers", "ignore_result")
    return {k: v for k, v in options.items() if k in keep}


def _next_eager_request(request: Context, sig: Signature | None) -> Context:
    nxt = Context(**{k: v for k, v in vars(request).items()})
    nxt.retries = request.retries + 1
    if sig is not None:
        nxt.args, nxt.kwargs = sig.args, sig.kwargs
    return nxt


def add_autoretry_behaviour(task: Task[Any, Any]) -> None:
    """Wrap run so autoretry_for exceptions call retry(), with Celery's backoff formula."""
    autoretry_for = tuple(task.autoretry_for or ())
    if not autoretry_for:
        return
    dont = tuple(task.dont_autoretry_for or ())
    retry_kwargs = dict(task.retry_kwargs or {})
    original: Callable[..., Any] = task.run

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except Ignore:
            raise
        except Retry:
            raise
        except dont:
            raise
        except autoretry_for as exc:
            options = dict(retry_kwargs)
            if task.retry_backoff:
                options["countdown"] = exponential_backoff(
                    factor=int(max(1.0, float(task.retry_backoff))),
                    retries=task.request.retries,
                    maximum=task.retry_backoff_max,
                    full_jitter=task.retry_jitter,
                )
            raise task.retry(exc=exc, **options) from exc

    run.__wrapped__ = original  # type: ignore[attr-defined]
    task.run = run  # type: ignore[method-assign]
