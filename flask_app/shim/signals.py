"""Task signals with Celery's names, senders and keyword arguments, built on blinker.

`Signal` keeps blinker's machinery (weak references, `connected_to`, `receivers_for`) and adds
what Celery code expects: `connect(receiver=None, sender=None, weak=True, dispatch_uid=None)`
including its decorator forms, receivers called as `receiver(signal=sig, sender=sender, **kw)` in
connection order, and a robust `send` that logs a receiver's exception, returns it as that
receiver's response and still calls the others.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

from blinker import ANY, NamedSignal, Namespace

log = logging.getLogger(__name__)
_order = itertools.count()

Receiver = Callable[..., Any]


class Signal(NamedSignal):
    """A blinker signal with Celery's `connect`/`disconnect`/`send` behaviour."""

    def __init__(self, name: str, doc: str | None = None) -> None:
        super().__init__(name, doc)
        self._connected_at: dict[Any, int] = {}
        self._uids: dict[Any, Any] = {}

    def connect(
        self,
        receiver: Receiver | None = None,
        sender: Any = None,
        weak: bool = True,
        dispatch_uid: Any = None,
        retry: bool = False,
    ) -> Any:
        """Subscribe `receiver` (or decorate one); `sender=None` means any sender."""
        if retry:
            raise NotImplementedError("connect(retry=True) is not supported by the shim")
        if receiver is None:
            return lambda fn: self.connect(fn, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
        if dispatch_uid is not None:
            if dispatch_uid in self._uids:
                return receiver
            self._uids[dispatch_uid] = receiver
        key = _receiver_key(receiver)
        self._connected_at.setdefault(key, next(_order))
        super().connect(receiver, sender=ANY if sender is None else sender, weak=weak)
        return receiver

    def disconnect(  # type: ignore[override]
        self,
        receiver: Receiver | None = None,
        sender: Any = None,
        weak: bool | None = None,
        dispatch_uid: Any = None,
    ) -> bool:
        """Unsubscribe by receiver or dispatch_uid; whether something was removed."""
        if dispatch_uid is not None:
            receiver = self._uids.pop(dispatch_uid, None)
        if receiver is None:
            return False
        key = _receiver_key(receiver)
        was = key in self.receivers
        super().disconnect(receiver, sender=ANY if sender is None else sender)
        if key not in self.receivers:
            self._connected_at.pop(key, None)
        return was

    def send(self, sender: Any = None, /, **named: Any) -> list[tuple[Receiver, Any]]:
        """Call every matching receiver in connection order; exceptions are returned."""
        responses: list[tuple[Receiver, Any]] = []
        if self.is_muted:
            return responses
        for receiver in self.ordered_receivers_for(sender):
            try:
                response = receiver(signal=self, sender=sender, **named)
            except Exception as exc:
                log.exception("signal %s: receiver %r raised", self.name, receiver)
                response = exc
            responses.append((receiver, response))
        return responses

    send_robust = send

    def ordered_receivers_for(self, sender: Any) -> list[Receiver]:
        """Live receivers for sender (and ANY), in the order they were connected."""
        found = [
            (self._connected_at.get(_receiver_key(r), 0), r) for r in self.receivers_for(sender)
        ]
        found.sort(key=lambda pair: pair[0])
        return [r for _, r in found]

    def has_listeners(self, sender: Any = None) -> bool:
        """Whether anyone listens (for this sender, or at all)."""
        return super().has_receivers_for(ANY if sender is None else sender)


def _receiver_key(receiver: Any) -> Any:
    from blinker._utilities import make_id

    return make_id(receiver)


class _Namespace(Namespace):
    def signal(self, name: str, doc: str | None = None) -> Signal:
        if name not in self:
            self[name] = Signal(name, doc)
        found: Signal = self[name]  # type: ignore[assignment]
        return found


_signals = _Namespace()

before_task_publish = _signals.signal(
    "before_task_publish",
    "sender=task name; body, exchange, routing_key, headers, properties, declare, retry_policy",
)
after_task_publish = _signals.signal(
    "after_task_publish", "sender=task name; body, exchange, routing_key, headers"
)
task_received = _signals.signal("task_received", "sender=the delivery receiver; request")
task_prerun = _signals.signal("task_prerun", "sender=task; task_id, task, args, kwargs")
task_postrun = _signals.signal(
    "task_postrun", "sender=task; task_id, task, args, kwargs, retval, state"
)
task_success = _signals.signal("task_success", "sender=task; result")
task_failure = _signals.signal(
    "task_failure", "sender=task; task_id, exception, args, kwargs, traceback, einfo"
)
task_retry = _signals.signal("task_retry", "sender=task; request, reason, einfo")
task_revoked = _signals.signal("task_revoked", "sender=task; request, terminated, signum, expired")
task_unknown = _signals.signal(
    "task_unknown", "sender=the delivery receiver; name, id, message, exc"
)
task_rejected = _signals.signal("task_rejected", "sender=the delivery receiver; message, exc")
task_internal_error = _signals.signal(
    "task_internal_error",
    "sender=task; task_id, args, kwargs, request, exception, traceback, einfo",
)
# The shim's own (not Celery's): sent by the celery.backend_cleanup task after it deleted the
# expired results, so the host app can prune its own tables in the same periodic job.
backend_cleanup = _signals.signal(
    "backend_cleanup", "sender=the backend_cleanup task; now, deleted (counts)"
)

__all__ = [
    "Signal",
    "after_task_publish",
    "backend_cleanup",
    "before_task_publish",
    "task_failure",
    "task_internal_error",
    "task_postrun",
    "task_prerun",
    "task_received",
    "task_rejected",
    "task_retry",
    "task_revoked",
    "task_success",
    "task_unknown",
]
