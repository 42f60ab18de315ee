"""Exception types, as `celery.exceptions`.

ShimError                      configuration or use the shim cannot honour
├── ImproperlyConfigured
└── UnsupportedOption          a Celery option or call QStash can't give (raised at once)
TaskPredicate                  control flow raised by task bodies
├── Retry, Ignore, Reject
TaskError
├── MaxRetriesExceededError, TimeoutError, TaskRevokedError, NotRegistered
ChordError                     a chord member failed: stored on the chord's body
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any


class CeleryError(Exception):
    """Base of the shim's own errors (Celery's name)."""


ShimError = CeleryError


class ImproperlyConfigured(CeleryError, ValueError):
    """The configuration cannot be used."""


class UnsupportedOption(CeleryError, ValueError):
    """A Celery option or feature the shim does not provide over QStash."""


class EncodeError(CeleryError, TypeError):
    """A value cannot be encoded as Celery-JSON."""


class DecodeError(CeleryError, ValueError):
    """A payload is not valid Celery-JSON."""


class TaskPredicate(CeleryError):
    """Base of the exceptions that steer a task run."""


class Retry(TaskPredicate):
    """The task is to be retried (raised by `Task.retry`)."""

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | None = None,
        when: float | datetime | None = None,
        is_eager: bool = False,
        sig: Any = None,
        **kwargs: Any,
    ) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        super().__init__(self, exc, when, **kwargs)

    def humanize(self) -> str:
        """'in Ns' or 'at <eta>'."""
        if isinstance(self.when, int | float):
            return f"in {self.when}s"
        return f"at {self.when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc:
            return f"Retry {self.humanize()}: {self.exc!r}"
        return f"Retry {self.humanize()}"

    def __reduce__(self) -> Any:
        return self.__class__, (self.message, self.exc, self.when)


RetryTaskError = Retry


class Ignore(TaskPredicate):
    """The task asks that its outcome be ignored (no state stored)."""


class Reject(TaskPredicate):
    """The task rejects its message (`requeue` is not supported over QStash)."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)


class TaskError(CeleryError):
    """Task related errors."""


class MaxRetriesExceededError(TaskError):
    """The task's retry limit is reached."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.task_args = kwargs.pop("task_args", [])
        self.task_kwargs = kwargs.pop("task_kwargs", {})
        super().__init__(*args, **kwargs)


class TimeoutError(TaskError, builtins.TimeoutError):  # noqa: A001 - Celery's name
    """`AsyncResult.get(timeout=...)` ran out."""


class TaskRevokedError(TaskError):
    """The task was revoked or expired before it ran."""


class NotRegistered(KeyError, TaskError):
    """No task has this name."""

    def __str__(self) -> str:
        return repr(self.args[0]) if self.args else "NotRegistered"


class SoftTimeLimitExceeded(Exception):
    """Soft time limit (T3: never raised by the shim)."""


class TimeLimitExceeded(Exception):
    """Hard time limit (named for imports; the shim cannot raise it)."""


class OperationalError(CeleryError):
    """Publishing to QStash failed."""


class ChordError(CeleryError):
    """A chord header member failed (or its body could not be sent): the body fails with it."""
