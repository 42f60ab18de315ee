"""What follows a finished run in a canvas: the chain's next step, failures, the chord fan-in.

Everything here is idempotent, because a duplicate delivery of a finished task calls it again
(the run that finished may have died, or QStash may have refused the next message): steps have
frozen ids and deduplicated messages, and a chord counts each member once in the database.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Flask

from flask_app.shim import backend, states
from flask_app.shim.canvas import Signature, chain, chord, group, maybe_signature
from flask_app.shim.exceptions import ChordError
from flask_app.shim.request import Context
from flask_app.shim.tracer import run_errbacks

if TYPE_CHECKING:
    from flask_app.shim.app import Celery

log = logging.getLogger(__name__)


def proceed(
    flask_app: Flask,
    app: Celery,
    request: Context,
    state: str | None,
    value: Any,
    traceback: str | None,
) -> None:
    """Send the next step on success, fail the rest of the chain on failure, count the chord.

    Raises:
        OperationalError: QStash refused a message (the caller answers non-2xx: redelivery).
    """
    if request.chain and state == states.SUCCESS:
        send_next(app, request, value)
    if request.chain and state == states.FAILURE:
        fail_chain(flask_app, app, request.chain, value, traceback)
    if request.chord and state in states.READY_STATES:
        count_chord_part(flask_app, app, request.chord, request.id or "")


def send_next(app: Celery, request: Context, value: Any) -> None:
    """Publish the chain's next step with the return value first (unless it is immutable)."""
    steps = list(request.chain or [])
    following = maybe_signature(steps.pop(), app=app)
    following.apply_async(
        (value,), chain=steps or None, parent_id=request.id, root_id=request.root_id
    )


def fail_chain(
    flask_app: Flask, app: Celery, steps: list[Any], exc: Any, traceback: str | None
) -> None:
    """Store the failure on every later step, as Celery does, so `.get()` on the chain raises."""
    for raw in steps:
        for task_id, chord_id in frozen_ids(maybe_signature(raw, app=app)):
            backend.store_result(
                flask_app, task_id, exc, states.FAILURE, traceback=traceback, only_unready=True
            )
            if chord_id:
                count_chord_part(flask_app, app, chord_id, task_id)


def frozen_ids(sig: Signature) -> Iterator[tuple[str, str | None]]:
    """(task id, chord id) of every task a frozen signature will run, chain steps included."""
    if isinstance(sig, chain | group):
        for step in sig.tasks:
            yield from frozen_ids(step)
    elif isinstance(sig, chord):
        yield from frozen_ids(sig.body)
    else:
        if sig.id:
            yield sig.id, sig.options.get("chord")
        for raw in sig.options.get("chain") or []:
            yield from frozen_ids(maybe_signature(raw, app=sig._app))


def count_chord_part(flask_app: Flask, app: Celery, group_id: str, task_id: str) -> None:
    """Count a finished member; the call that completes the count sends (or fails) the body."""
    found = backend.count_chord_part(flask_app, group_id, task_id)
    if found is None:
        log.error("chord %s of member %s no longer exists; its body never runs", group_id, task_id)
        return
    if found.done < found.size:
        return
    taken = backend.take_chord_firing(flask_app, group_id, datetime.now(UTC))
    if taken is None:  # fired already (or by a concurrent member that counted last)
        return
    try:
        _fire(flask_app, app, taken)
    except Exception:
        backend.undo_chord_firing(flask_app, group_id)
        raise


def _fire(flask_app: Flask, app: Celery, found: backend.Chord) -> None:
    body = maybe_signature(found.body, app=app)
    values = []
    for member_id in found.member_ids:
        meta = backend.get(flask_app, member_id)
        if meta is None or meta.state not in states.READY_STATES:
            reason = f"Dependency {member_id} has no stored result (it ignores results?)"
            return fail_body(flask_app, app, body, ChordError(reason))
        if meta.state in states.PROPAGATE_STATES:
            error = ChordError(f"Dependency {member_id} raised {meta.result!r}")
            error.__cause__ = meta.result if isinstance(meta.result, BaseException) else None
            return fail_body(flask_app, app, body, error)
        values.append(meta.result)
    body.apply_async((values,))


def fail_body(flask_app: Flask, app: Celery, body: Signature, exc: ChordError) -> None:
    """Fail the chord's body (every task it would run) and call its errbacks, as Celery does."""
    log.error("chord body %s fails: %s", body.id, exc)
    for task_id, _ in frozen_ids(body):
        backend.store_result(flask_app, task_id, exc, states.FAILURE, only_unready=True)
    first = body.tasks[0] if isinstance(body, chain) and body.tasks else body
    request = Context(
        id=first.id,
        task=first.name,
        args=first.args,
        kwargs=first.kwargs,
        errbacks=first.options.get("link_error"),
        root_id=first.options.get("root_id") or first.id,
        called_directly=False,
        delivery_info={"is_eager": False},
    )
    run_errbacks(request, exc, None)
