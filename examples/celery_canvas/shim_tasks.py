"""The examples of Celery's canvas guide (docs/userguide/canvas.rst), as one module.

The tasks are the guide's (`add`, `mul`, `tsum`, `raising_task`, `on_chord_error`); each
function below builds and sends one of the guide's workflows and returns its result handle.
`shim_tasks.py` is this file with its imports changed to the shim's.
"""

from __future__ import annotations

from flask_app.shim import chain, chord, group, shared_task

CHORD_ERRORS: list[str] = []


@shared_task
def add(x, y):
    return x + y


@shared_task
def mul(x, y):
    return x * y


@shared_task
def tsum(numbers):
    return sum(numbers)


@shared_task
def raising_task():
    raise ValueError("something something")


@shared_task
def on_chord_error(request, exc, traceback):
    CHORD_ERRORS.append(f"Task {request.id!r} raised error: {exc!r}")


def simple_chain():
    # 2 + 2 + 4 + 8
    return chain(add.s(2, 2), add.s(4), add.s(8))()


def piped_chain():
    return (add.s(2, 2) | add.s(4) | add.s(8))()


def immutable_chain():
    return (add.si(2, 2) | add.si(4, 4) | add.si(8, 8))()


def simple_group():
    return group(add.s(i, i) for i in range(10))()


def simple_chord():
    return chord((add.s(i, i) for i in range(10)), tsum.s())()


def partial_chain():
    # (16 + 4) * 8
    c1 = add.s(4) | mul.s(8)
    return c1(16)


def combined_chains():
    # ((4 + 16) * 2 + 4) * 8
    c2 = add.s(4, 16) | mul.s(2) | (add.s(4) | mul.s(8))
    return c2()


def group_upgraded_to_chord():
    c3 = group(add.s(i, i) for i in range(10)) | tsum.s()
    return c3()


def chain_into_immutable_group():
    return (add.s(4, 4) | group(add.si(i, i) for i in range(10)))()


def linked_chain():
    # (4 + 4) * 8 * 10
    return chain(add.s(4, 4), mul.s(8), mul.s(10))()


def hundred_chord():
    return chord(add.s(i, i) for i in range(100))(tsum.s())


def failing_chord():
    return (
        group(add.s(4, 4), raising_task.s(), add.s(8, 8)) | tsum.s().on_error(on_chord_error.s())
    ).delay()
