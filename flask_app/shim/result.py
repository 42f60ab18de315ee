"""Result handles (`celery.result`): AsyncResult reads the app's database; EagerResult memory."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from flask_app.shim import _state, states
from flask_app.shim import backend as _backend
from flask_app.shim.binding import flask_app_for, get_plugs
from flask_app.shim.exceptions import TaskRevokedError, TimeoutError, UnsupportedOption

log = logging.getLogger(__name__)

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
            if follow_parents and propagate:  # as Celery's on_interval: only while waiting
                self._maybe_reraise_parent_error()
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

    def _parents(self) -> Iterator[Any]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def _maybe_reraise_parent_error(self) -> None:
        """Raise the error of a failed ancestor step (Celery's get(follow_parents=True)).

        A chord's header (a GroupResult parent) is skipped: its failure reaches the body as a
        ChordError, which is what Celery documents `get()` raising for a chord.
        """
        for node in reversed(list(self._parents())):
            if not isinstance(node, ResultSet):
                node.maybe_throw()

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
        if terminate:
            raise UnsupportedOption("revoke(terminate=True): a running delivery can't be stopped")
        app = self._flask()
        self._cache = None
        message_id = _backend.mark_revoked(app, self.id, TaskRevokedError("revoked"))
        if message_id:
            try:
                get_plugs(app).publisher.cancel(message_id)
            except Exception:  # the tombstone still stops it at delivery
                log.warning("could not cancel %s", message_id, exc_info=True)

    def then(self, *args: Any, **kwargs: Any) -> Any:
        """Promises are not supported.

        Raises:
            UnsupportedOption
        """
        raise UnsupportedOption("AsyncResult.then() is not supported by the shim")

    @property
    def children(self) -> Any:
        """Workflow graph (not supported).

        Raises:
            UnsupportedOption
        """
        raise UnsupportedOption("result graphs (children) are not supported by the shim")

    def as_tuple(self) -> tuple[Any, ...]:
        """(id, parent) as Celery serializes a result handle."""
        parent = self.parent.as_tuple() if self.parent is not None else None
        return (self.id, parent)


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


class ResultSet:
    """Several results handled as one (Celery's ResultSet)."""

    def __init__(self, results: Sequence[Any], app: Celery | None = None, **kwargs: Any) -> None:
        self.results = list(results)
        self.app = app or _state.get_current_app()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    def add(self, result: Any) -> None:
        """Add a result (once)."""
        if result not in self.results:
            self.results.append(result)

    def ready(self) -> bool:
        """Whether every result is ready."""
        return all(r.ready() for r in self.results)

    def waiting(self) -> bool:
        """Whether any result is not ready yet."""
        return not self.ready()

    def successful(self) -> bool:
        """Whether every result succeeded."""
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        """Whether any result failed."""
        return any(r.failed() for r in self.results)

    def completed_count(self) -> int:
        """How many results succeeded (Celery counts successes only)."""
        return sum(1 for r in self.results if r.successful())

    def maybe_throw(self, callback: Any = None, propagate: bool = True) -> None:
        """Raise the first stored failure, in order."""
        for result in self.results:
            result.maybe_throw(propagate=propagate)

    maybe_reraise = maybe_throw

    def revoke(self, connection: Any = None, terminate: bool = False, **kwargs: Any) -> None:
        """Revoke every result."""
        for result in self.results:
            result.revoke(terminate=terminate)

    def forget(self) -> None:
        """Forget every result."""
        for result in self.results:
            result.forget()

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: Any = None,
        no_ack: bool = True,
        on_message: Any = None,
        disable_sync_subtasks: bool = True,
        on_interval: Any = None,
        **kwargs: Any,
    ) -> list[Any]:
        """Every value in order (the timeout covers the whole wait).

        Raises:
            TimeoutError: not all ready within timeout.
            the first failure, in order, when propagate.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            value = result.get(
                timeout=remaining,
                propagate=propagate,
                interval=interval,
                on_interval=on_interval,
                disable_sync_subtasks=disable_sync_subtasks,
            )
            if callback is not None:
                callback(result.id, value)
            else:
                values.append(value)
        return values

    get = join

    def join_native(self, *args: Any, **kwargs: Any) -> list[Any]:
        """Same as join (results are polled)."""
        return self.join(*args, **kwargs)

    @property
    def supports_native_join(self) -> bool:
        """False: results are polled."""
        return False


class GroupResult(ResultSet):
    """The result of a group: its id and its members' results, in order."""

    def __init__(
        self,
        id: str | None = None,  # noqa: A002 - Celery's name
        results: Sequence[Any] | None = None,
        parent: Any = None,
        app: Celery | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(results or [], app=app)
        self.id = id
        self.parent = parent

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def children(self) -> list[Any]:
        """The members' results."""
        return self.results

    def as_tuple(self) -> tuple[Any, ...]:
        """((id, parent), [member tuples]) as Celery serializes a group result."""
        parent = self.parent.as_tuple() if self.parent is not None else None
        return ((self.id, parent), [r.as_tuple() for r in self.results])
