"""Run one task request with Celery's order of signals, handlers, state writes and links."""

from __future__ import annotations

import inspect
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask_app.shim import backend, signals, states
from flask_app.shim.binding import app_context_for, flask_app_for
from flask_app.shim.canvas import Signature, maybe_signature
from flask_app.shim.exceptions import Ignore, Reject, Retry
from flask_app.shim.request import Context, ExceptionInfo

if TYPE_CHECKING:
    from flask_app.shim.task import Task

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """How a run ended: state (None when an eager exception propagated), value, traceback."""

    state: str | None
    retval: Any
    traceback: str | None = None


class _Store:
    """Writes to the result store unless this run doesn't keep results."""

    def __init__(self, task: Task[Any, Any], request: Context, eager: bool) -> None:
        self.task = task
        self.request = request
        keep = not eager or bool(task.app.conf.task_store_eager_result)
        self.results = keep and not request.ignore_result
        self.errors = keep and (not request.ignore_result or task.store_errors_even_if_ignored)

    def write(self, state: str, value: Any, tb: str | None = None, **kw: Any) -> None:
        keep = self.errors if state in states.EXCEPTION_STATES else self.results
        if keep and self.request.id:
            app = flask_app_for(self.task.app)
            backend.store_result(
                app,
                self.request.id,
                value,
                state,
                traceback=tb,
                name=self.task.name,
                **({"retries": self.request.retries} | kw),
            )


def trace(task: Task[Any, Any], request: Context, *, eager: bool, throw: bool) -> Outcome:
    """Run the body with the full trace; never raises unless throw (eager propagation).

    Raises:
        the body's exception when throw is set (after task_postrun(state=None)).
    """
    with task.pushed(request), app_context_for(task.app):
        return _trace(task, request, eager=eager, throw=throw)


def _trace(task: Task[Any, Any], request: Context, *, eager: bool, throw: bool) -> Outcome:
    store = _Store(task, request, eager)
    args, kwargs, task_id = request.args, request.kwargs, request.id or ""
    signals.task_prerun.send(task, task_id=task_id, task=task, args=args, kwargs=kwargs)
    outcome = Outcome(None, None)
    try:
        outcome = _run(task, request, store, throw)
    except BaseException as exc:
        _postrun(task, request, outcome)
        signals.task_internal_error.send(
            task,
            task_id=task_id,
            args=args,
            kwargs=kwargs,
            request=request,
            exception=exc,
            traceback=exc.__traceback__,
            einfo=ExceptionInfo(exc),
        )
        raise
    _postrun(task, request, outcome)
    return outcome


def _postrun(task: Task[Any, Any], request: Context, outcome: Outcome) -> None:
    signals.task_postrun.send(
        task,
        task_id=request.id or "",
        task=task,
        args=request.args,
        kwargs=request.kwargs,
        retval=outcome.retval,
        state=outcome.state,
    )


def _run(task: Task[Any, Any], request: Context, store: _Store, throw: bool) -> Outcome:
    track = (
        task.track_started if task.track_started is not None else task.app.conf.task_track_started
    )
    if track:
        store.write(states.STARTED, {"pid": None, "hostname": request.hostname})
    task.before_start(request.id or "", request.args, request.kwargs)
    try:
        retval = _invoke(task, request)
    except Ignore as exc:
        log.info("task %s[%s] ignored", task.name, request.id)
        return Outcome(states.IGNORED, exc)
    except Reject as exc:
        log.info("task %s[%s] rejected: %s", task.name, request.id, exc.reason)
        return Outcome(states.REJECTED, exc)
    except Retry as exc:
        if throw:
            raise
        return _on_retry(task, request, store, exc)
    except Exception as exc:
        if throw:
            raise
        return _on_failure(task, request, store, exc)
    return _on_success(task, request, store, retval)


def _invoke(task: Task[Any, Any], request: Context) -> Any:
    if getattr(type(task).__call__, "is_shim_call", False):  # Task.__call__, not overridden
        return task.run(*request.args, **request.kwargs)
    task._local.tracing = True  # a custom __call__ (Flask's ContextTask pattern) wraps run
    try:
        return task(*request.args, **request.kwargs)
    finally:
        task._local.tracing = False


def _on_success(task: Task[Any, Any], request: Context, store: _Store, retval: Any) -> Outcome:
    for sig in request.callbacks or []:
        _send_link(maybe_signature(sig, app=task._app), (retval,))
    store.write(states.SUCCESS, retval)
    task_id = request.id or ""
    task.on_success(retval, task_id, request.args, request.kwargs)
    signals.task_success.send(task, result=retval)
    task.after_return(states.SUCCESS, retval, task_id, request.args, request.kwargs, None)
    return Outcome(states.SUCCESS, retval)


def _on_failure(task: Task[Any, Any], request: Context, store: _Store, exc: Exception) -> Outcome:
    einfo = ExceptionInfo(exc, sys.exc_info()[2])
    if isinstance(exc, tuple(task.throws or ())):
        log.info("task %s[%s] raised expected: %r", task.name, request.id, exc)
    else:
        log.error("task %s[%s] raised: %r", task.name, request.id, exc, exc_info=exc)
    store.write(states.FAILURE, exc, einfo.traceback)
    run_errbacks(request, exc, einfo.traceback)
    task_id = request.id or ""
    task.on_failure(exc, task_id, request.args, request.kwargs, einfo)
    signals.task_failure.send(
        task,
        task_id=task_id,
        exception=exc,
        args=request.args,
        kwargs=request.kwargs,
        traceback=einfo.tb,
        einfo=einfo,
    )
    task.after_return(states.FAILURE, exc, task_id, request.args, request.kwargs, einfo)
    return Outcome(states.FAILURE, exc, einfo.traceback)


def _on_retry(task: Task[Any, Any], request: Context, store: _Store, exc: Retry) -> Outcome:
    einfo = ExceptionInfo(exc, sys.exc_info()[2])
    reason = exc.exc if exc.exc is not None else exc
    # only_unready: the re-sent message may already have finished (countdown 0).
    store.write(
        states.RETRY, reason, einfo.traceback, only_unready=True, retries=request.retries + 1
    )
    task.on_retry(reason, request.id or "", request.args, request.kwargs, einfo)
    signals.task_retry.send(task, request=request, reason=exc, einfo=einfo)
    return Outcome(states.RETRY, exc, einfo.traceback)


def _send_link(sig: Signature, parent_args: tuple[Any, ...]) -> None:
    try:
        sig.apply_async(parent_args)
    except Exception:
        log.exception("could not send link %r", sig)


def run_errbacks(request: Context, exc: BaseException, traceback: str | None) -> None:
    """Celery's rule: an errback taking >1 argument runs inline with (request, exc, traceback);
    the others are sent with the failed task's id."""
    for raw in request.errbacks or []:
        sig = maybe_signature(raw)
        try:
            errback = sig.type
            if _arity(errback) > 1:
                errback(*((request, exc, traceback) + sig.args), **sig.kwargs)
            else:
                sig.apply_async((request.id,))
        except Exception:
            log.exception("errback %r failed", sig)


def _arity(task: Task[Any, Any]) -> int:
    try:
        params = inspect.signature(task.run).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return 3
    return sum(1 for p in params if p.kind in kinds)
