"""Celery's canvas guide, ported by changing imports only, end to end over a real qstash_dev."""

import difflib
from pathlib import Path

import pytest

from flask_app.shim import GroupResult
from flask_app.shim.exceptions import ChordError

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60


@pytest.fixture
def app_overrides(served_by_qstash):
    return served_by_qstash | {"TASK_IMPORTS": "examples.celery_canvas.shim_tasks"}


@pytest.fixture
def guide(live):
    from examples.celery_canvas import shim_tasks

    shim_tasks.CHORD_ERRORS.clear()
    return shim_tasks


def test_the_canvas_example_differs_from_its_celery_original_only_in_imports():
    original = (ROOT / "examples/celery_canvas/tasks.py").read_text().splitlines()
    ported = (ROOT / "examples/celery_canvas/shim_tasks.py").read_text().splitlines()
    changed = [
        line[1:]
        for line in difflib.unified_diff(original, ported, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed == [
        "from celery import chain, chord, group, shared_task",
        "from flask_app.shim import chain, chord, group, shared_task",
    ]


@pytest.mark.parametrize(
    ("workflow", "value"),
    [
        ("simple_chain", 16),
        ("piped_chain", 16),
        ("partial_chain", 160),
        ("combined_chains", 352),
        ("simple_group", [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]),
        ("simple_chord", 90),
        ("group_upgraded_to_chord", 90),
        ("chain_into_immutable_group", [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]),
        ("hundred_chord", 9900),
    ],
)
def test_the_guides_workflows_give_the_guides_values(guide, workflow, value):
    result = getattr(guide, workflow)()
    assert result.get(timeout=TIMEOUT, interval=0.05) == value


def test_chains_keep_parent_links_to_intermediate_results(guide):
    res = guide.linked_chain()
    assert res.get(timeout=TIMEOUT, interval=0.05) == 640
    assert res.parent.get(timeout=TIMEOUT) == 64 and res.parent.parent.get(timeout=TIMEOUT) == 8

    res = guide.immutable_chain()
    assert res.get(timeout=TIMEOUT, interval=0.05) == 16
    assert (res.parent.get(), res.parent.parent.get()) == (8, 4)


def test_group_results_answer_for_the_whole_group(guide):
    res = guide.simple_group()
    assert isinstance(res, GroupResult)
    assert res.join(timeout=TIMEOUT, interval=0.05) == [i + i for i in range(10)]
    assert res.ready() and res.successful() and not res.failed()
    assert res.completed_count() == 10


def test_a_failing_header_task_fails_the_chord_with_chord_error(guide, qstash_server):
    res = guide.failing_chord()
    with pytest.raises(ChordError, match=r"Dependency .* raised ValueError\('something"):
        res.get(timeout=TIMEOUT, interval=0.05)
    assert res.failed() and res.traceback is None
    assert guide.CHORD_ERRORS == [
        f'Task {res.id!r} raised error: ChordError("Dependency {_failed_member(res)} raised '
        "ValueError('something something')\")"
    ]


def _failed_member(res):
    return next(r.id for r in res.parent.results if r.failed())
