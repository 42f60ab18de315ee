"""The task object (`celery.Task`): call it, send it, trace it, retry it, sign it."""

from __future__ import annotations

import inspect
import random
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NoReturn, ParamSpec, TypeVar

from sqlalchemy import event

from flask_app.shim import _state, backend, delivery, serialization
from flask_app.shim.binding import app_context_for, flask_app_for, get_plugs
from flask_app.shim.canvas import Signature, maybe_signatures, signature
from flask_app.shim.exceptions import (
    Ignore,
    MaxRetriesExceededError,
    Retry,
    UnsupportedOption,
)
from flask_app.shim.ids import uuid
from flask_app.shim.options import T3_CALL_OPTIONS, T3_TASK_OPTIONS, check_option
from flask_app.shim.request import Context, ExceptionInfo
from flask_app.shim.result import AsyncResult, EagerResult
from flask_app.shim.tracer import trace

if TYPE_CHECKING:
    from flask_app.shim.app import Celery

__all__ = [
    "T3_CALL_OPTIONS",
    "T3_TASK_OPTIONS",
    "Context",
    "ExceptionInfo",
    "Signature",
    "Task",
    "check_option",
    "signature",
    "uuid",
]

P = ParamSpec("P")
R = TypeVar("R")


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
        self._request_stack()  # creates the thread-local state if a subclass skipped __init__
        if getattr(self._local, "tracing", False):  # the tracer calls a custom __call__
            return self.run(*args, **kwargs)
        request = Context(args=args, kwargs=kwargs, called_directly=True, task=self.name)
        with self.pushed(request), app_context_for(self.app):
            return self.run(*args, **kwargs)

    __call__.is_shim_call = True  # type: ignore[attr-defined]  # the tracer calls run() directly

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main}>"

    # -- sending ---------------------------------------------------------------------------

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """apply_async(args, kwargs) with no options."""
        return self.apply_async(args, kwargs)

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """delay() once the request's database session commits (now if none is open)."""
        current_session = get_plugs(flask_app_for(self.app)).current_session
        if current_session is None:
            raise UnsupportedOption("delay_on_commit needs init_app(plugs=Plugs(current_session=))")
        session = current_session()
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
        """Long form of s(): signature(args, kwargs, options, ..., **options) as Celery's."""
        starkwargs.setdefault("app", self._app)
        return Signature(self.name, args, *starargs, **starkwargs)

    subtask = signature

    def AsyncResult(self, task_id: str, **kwargs: Any) -> AsyncResult:  # noqa: N802
        """Result handle for an id of this task."""
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
            # a retried canvas step still continues its chain and counts in its chord
            "chain": request.chain,
            "group_id": request.group,
            "group_index": request.group_index,
            "chord": request.chord,
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
        raise UnsupportedOption(
            "replace, add_to_chord, chunks, map, starmap and send_event are not supported by the "
            "shim (chain, group and chord are)"
        )

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
