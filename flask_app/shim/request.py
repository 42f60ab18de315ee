"""`self.request` (`Context`) and Celery's `einfo` (`ExceptionInfo`)."""

from __future__ import annotations

import traceback as tb_module
from types import TracebackType
from typing import Any


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
    group: str | None = None
    group_index: int | None = None
    chord: str | None = None  # the chord's group id when this run is a chord header member
    chain: list[dict[str, Any]] | None = None  # the chain's next steps, the next one last
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
