"""Result handles (`celery.result`): AsyncResult reads the app's database; EagerResult memory."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from flask_app.shim import _state, states
from flask_app.shim import backend as _backend
from flask_app.shim.exceptions import TaskRevokedError, TimeoutError, UnsupportedOption

if TYPE_CHECKING:
    from flask_app.shim.app import Celery


class AsyncResult:
    """Handle on a task id; state and value come from the result store (polled)."""

    def __init__(
        self,
        id: str | None,  # noqa: A002 - Celery's name
        backend: Any = None,
        task_name: str | None = None,
        app: Celery | None = None,
        parent: Any = None,
    ) -> None:
        if id is None:
            raise ValueError(f"AsyncResult requires valid id, not {type(id)}")
        self.id = id
        self.task_name = task_name
        self.app = app or _state.get_current_app()
        self.parent = parent
        self.ignored = False
        self._cache: _backend.Meta | None = None

    @property
    def task_id(self) -> str:
        """Alias of id."""
        return self.id

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        return other == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def _flask(self) -> Any:
        from flask_app.shim.app import flask_app_for

        return flask_app_for(self.app)

    def _meta(self) -> _backend.Meta | None:
        if self._cache is not None:
            return self._cache
        meta: _backend.Meta | None = _backend.get(self._flask(), self.id)
        if meta is not None and meta.state in states.READY_STATES:
            self._cache = meta
        return meta

    @property
    def state(self) -> str:
        """Current state; ids the store never heard of read as PENDING."""
        meta = self._meta()
        return meta.state if meta is not None else states.PENDING

    status = state

    @property
    def result(self) -> Any:
        """Return value, the exception on failure, or meta for custom states."""
        meta = self._meta()
        return meta.result if meta is not None and meta.state != states.PENDING else None

    info = result

    @property
    def traceback(self) -> str | None:
        """Formatted traceback of a failure."""
        meta = self._meta()
        return meta.traceback if meta is not None else None

    @property
    def retries(self) -> int:
        """How many times the task was retried so far."""
        meta = self._meta()
        return meta.retries if meta is not None else 0

    @property
    def name(self) -> str | None:
        """The task name (when stored)."""
        meta = self._meta()
        return meta.name if meta is not None else self.task_name

    @property
    def date_done(self) -> Any:
        """When the task reached a ready state."""
        meta = self._meta()
        return meta.date_done if meta is not None else None

    @property
    def args(self) -> Any:
        """Stored arguments (for sent tasks)."""
        meta = self._meta()
        return meta.args if meta is not None else None

    @property
    def kwargs(self) -> Any:
        """Stored keyword arguments (for sent tasks)."""
        meta = self._meta()
        return meta.kwargs if meta is not None else None

    def ready(self) -> bool:
        """Whether the task finished (SUCCESS, FAILURE or REVOKED)."""
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        """Whether the task succeeded."""
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        """Whether the task failed."""
        return self.state == states.FAILURE

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        no_ack: bool = True,
        follow_parents: bool = True,
        callback: Any = None,
        on_message: Any = None,
        on_interval: Any = None,
        disable_sync_subtasks: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Poll the store until ready; the value, or the stored exception (raised if propagate).

        Raises:
            TimeoutError: not ready within timeout.
            RuntimeError: called inside a running task (disable_sync_subtasks).
            the task's exception (or TaskRevokedError) when propagate.
        """
        if self.ignored:
            return None
        if on_message is not None:
            raise UnsupportedOption("get(on_message=...) is not supported: results are polled")
        _assert_not_in_task(disable_sync_subtasks)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ready():
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("The operation timed out.")
            if on_interval is not None:
                on_interval()
            time.sleep(
                interval if deadline is None else max(0, min(interval, deadline - time.monotonic()))
            )
        value = self.result
        if callback is not None:
            callback(self.id, value)
        return self.maybe_throw(propagate=propagate, value=value)

    wait = get

    def maybe_throw(self, propagate: bool = True, value: Any = None) -> Any:
        """Raise the stored exception of a failed/revoked task (if propagate), else return."""
        value = self.result if value is None else value
        if self.state in states.PROPAGATE_STATES:
            if not isinstance(value, BaseException):
                value = TaskRevokedError(str(value))
            if propagate:
                raise value
        return value

    maybe_reraise = maybe_throw

    def forget(self) -> None:
        """Delete the stored result."""
        self._cache = None
        _backend.forget(self._flask(), self.id)

    def revoke(
        self,
        connection: Any = None,
        terminate: bool = False,
        signal: Any = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Discard the task if it has not run: tombstone + cancel its QStash message.

        Raises:
            UnsupportedOption: terminate=True (a running HTTP delivery cannot be stopped).
        """
        from flask_app.qstash.gateway import QStashError, get_gateway

        if terminate:
            raise UnsupportedOption("revoke(terminate=True): a running delivery can't be stopped")
        app = self._flask()
        self._cache = None
        message_id = _backend.mark_revoked(app, self.id, TaskRevokedError("revoked"))
        if message_id:
            try:
                get_gateway(app).cancel(message_id)
            except QStashError:  # the tombstone still stops it at delivery
                import logging

                logging.getLogger(__name__).warning("could not cancel %s", message_id)

    def then(self, *args: Any, **kwargs: Any) -> Any:
        """Promises are not supported.

        Raises:
            UnsupportedOption
        """
        raise UnsupportedOption("AsyncResult.then() is not supported by the shim")

    @property
    def children(self) -> Any:
        """Workflow graph (not supported)."""
        raise UnsupportedOption("result graphs (children) are not supported by the shim")


def _assert_not_in_task(disable_sync_subtasks: bool) -> None:
    task = _state.get_current_task()
    if disable_sync_subtasks and task is not None and not task.request.called_directly:
        raise RuntimeError(
            "Never call result.get() within a task! (disable_sync_subtasks=False to allow)"
        )


class EagerResult(AsyncResult):
    """Result of apply(): data in memory, always ready."""

    def __init__(
        self,
        id: str | None,  # noqa: A002
        ret_value: Any,
        state: str | None,
        traceback: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(id, task_name=name)
        self._value = ret_value
        self._state = state or states.FAILURE
        self._traceback = traceback

    @property
    def state(self) -> str:
        """The run's final state."""
        return self._state

    status = state

    @property
    def result(self) -> Any:
        """Return value or exception."""
        return self._value

    info = result

    @property
    def traceback(self) -> str | None:
        """Formatted traceback of a failure."""
        return self._traceback

    @property
    def name(self) -> str | None:
        """The task name."""
        return self.task_name

    def ready(self) -> bool:
        """Always True."""
        return True

    def get(  # type: ignore[override]
        self, timeout: float | None = None, propagate: bool = True, **kwargs: Any
    ) -> Any:
        """The value; on FAILURE/REVOKED raise the exception if propagate, else return it."""
        if self.ignored:
            return None
        return self.maybe_throw(propagate=propagate, value=self._value)

    wait = get  # type: ignore[assignment]

    def forget(self) -> None:
        """Nothing to forget."""

    def revoke(self, *args: Any, **kwargs: Any) -> None:
        """Mark REVOKED."""
        self._state = states.REVOKED
