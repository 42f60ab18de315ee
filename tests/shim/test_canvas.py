"""Canvas over the recording Gateway: chain, group, chord, their results and their errors."""

import pytest

from flask_app.shim import (
    AsyncResult,
    GroupResult,
    Signature,
    chain,
    chord,
    group,
    shared_task,
    signature,
    states,
)
from flask_app.shim.exceptions import ChordError, UnsupportedOption
from tests.shim.helpers import deliver

ERRORS: list[tuple[str, str]] = []


@shared_task(name="canvas.add")
def add(x, y):
    return x + y


@shared_task(name="canvas.mul")
def mul(x, y):
    return x * y


@shared_task(name="canvas.tsum")
def tsum(numbers):
    return sum(numbers)


@shared_task(name="canvas.fail")
def fail(*args):
    raise ValueError("something something")


@shared_task(name="canvas.on_error")
def on_error(request, exc, traceback):
    ERRORS.append((request.id, repr(exc)))


@pytest.fixture(autouse=True)
def _clear():
    ERRORS.clear()


def run_all(client, gateway, order=None):
    """Deliver every published message and whatever they publish; returns the responses."""
    answers = []
    while gateway.published:
        batch = gateway.take()
        for message_id, msg in order(batch) if order else batch:
            answers.append(deliver(client, message_id, msg))
    return answers


def test_signatures_take_partial_arguments_options_and_immutability():
    partial = add.s(2)
    assert partial.clone(args=(4,), kwargs={"debug": True}).args == (4, 2)
    assert add.s(2, 2).set(countdown=1).options == {"countdown": 1}
    assert add.si(2, 2).clone(args=(8,)).args == (2, 2)
    assert signature("canvas.add", args=(2, 2), countdown=10).options == {"countdown": 10}
    assert add.signature((2, 2), {"debug": True}, countdown=10).kwargs == {"debug": True}
    assert add.s(2, 2)() == 4
    assert isinstance(add.s(1) | mul.s(2), chain)
    assert Signature.from_dict(dict(add.s(1) | mul.s(2))).tasks[1].name == "canvas.mul"


def test_a_chain_runs_each_step_with_the_previous_value(app, client, gateway):
    res = chain(add.s(4, 4), mul.s(8), mul.s(10)).apply_async()
    [(_, first)] = gateway.published
    assert first.body["task"] == "canvas.add" and len(first.body["chain"]) == 2
    run_all(client, gateway)
    assert res.get(timeout=1) == 640
    assert res.parent.get() == 64 and res.parent.parent.get() == 8
    assert res.parent.parent.parent is None


def test_pipes_and_immutable_steps(app, client, gateway):
    res = (add.si(2, 2) | add.si(4, 4) | add.si(8, 8))()
    run_all(client, gateway)
    assert (res.get(), res.parent.get(), res.parent.parent.get()) == (16, 8, 4)


def test_partial_chains_take_the_call_arguments(app, client, gateway):
    res = (add.s(4) | mul.s(8))(16)
    run_all(client, gateway)
    assert res.get() == 160


def test_a_failed_step_fails_the_rest_of_the_chain_with_its_error(app, client, gateway):
    res = chain(add.s(1, 1), fail.s(), add.s(1)).apply_async()
    run_all(client, gateway)
    with pytest.raises(ValueError, match="something"):
        res.get(timeout=1)
    assert res.parent.state == states.FAILURE and res.parent.parent.get() == 2
    assert gateway.published == []


def test_a_group_returns_a_group_result(app, client, gateway):
    res = group(add.s(i, i) for i in range(5)).apply_async()
    assert isinstance(res, GroupResult) and len(res) == 5
    assert not res.ready() and res.completed_count() == 0 and res.waiting()
    run_all(client, gateway)
    assert res.get(timeout=1) == [0, 2, 4, 6, 8]
    assert res.join(timeout=1) == [0, 2, 4, 6, 8]
    assert res.ready() and res.successful() and not res.failed() and res.completed_count() == 5


def test_a_group_with_a_failure(app, client, gateway):
    res = group(add.s(1, 1), fail.s()).apply_async()
    run_all(client, gateway)
    assert res.failed() and not res.successful() and res.completed_count() == 1
    with pytest.raises(ValueError):
        res.get(timeout=1)
    assert res.join(propagate=False)[0] == 2


def test_a_chain_ending_in_a_group_forwards_the_value_to_every_member(app, client, gateway):
    res = (add.s(4, 4) | group(add.s(i) for i in range(3)))()
    run_all(client, gateway)
    assert res.get(timeout=1) == [8, 9, 10] and res.parent.get() == 8


def test_a_chord_sends_its_body_once_with_every_value_in_order(app, client, gateway):
    res = chord(add.s(i, i) for i in range(10))(tsum.s())
    published = gateway.take()
    assert len(published) == 10 and all(m.body["chord"] for _, m in published)
    for message_id, msg in reversed(published):  # finish in any order
        deliver(client, message_id, msg)
    [(body_id, body)] = gateway.take()
    assert body.body["args"] == [[0, 2, 4, 6, 8, 10, 12, 14, 16, 18]]
    deliver(client, body_id, body)
    assert res.get(timeout=1) == 90 and isinstance(res.parent, GroupResult)


def test_duplicate_deliveries_of_chord_members_count_once(app, client, gateway):
    res = chord([add.s(1, 1), add.s(2, 2)], tsum.s()).apply_async()
    members = gateway.take()
    for message_id, msg in members + members + members:
        deliver(client, message_id, msg)
    [(body_id, body)] = gateway.take()
    for _ in range(2):
        deliver(client, body_id, body)
    assert res.get(timeout=1) == 6 and gateway.published == []


def test_a_failed_member_fails_the_body_with_chord_error_and_calls_its_errback(
    app, client, gateway
):
    body = tsum.s().on_error(on_error.s())
    res = chord([add.s(4, 4), fail.s(), add.s(8, 8)], body).apply_async()
    run_all(client, gateway)
    with pytest.raises(ChordError, match=r"Dependency .* raised ValueError\('something"):
        res.get(timeout=1)
    assert res.failed() and gateway.published == []
    assert ERRORS and ERRORS[0][0] == res.id and "ChordError" in ERRORS[0][1]


def test_group_piped_into_a_task_becomes_a_chord(app, client, gateway):
    res = (group(add.s(i, i) for i in range(4)) | tsum.s())()
    run_all(client, gateway)
    assert res.get(timeout=1) == 12


def test_a_chord_inside_a_chain_continues_the_chain(app, client, gateway):
    res = chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s(), mul.s(10)).apply_async()
    run_all(client, gateway)
    assert res.get(timeout=1) == (3 + 4) * 10
    assert res.parent.get() == 7


def test_chains_as_chord_members_count_when_their_last_step_ends(app, client, gateway):
    res = chord([add.s(1, 1) | mul.s(10), add.s(2, 2) | mul.s(10)], tsum.s())()
    run_all(client, gateway)
    assert res.get(timeout=1) == 60


def test_an_empty_chord_runs_its_body_with_an_empty_list(app, client, gateway):
    res = chord([], tsum.s()).apply_async()
    run_all(client, gateway)
    assert res.get(timeout=1) == 0


def test_groups_refuse_links_as_celery_does(app, gateway):
    with pytest.raises(TypeError, match="chord"):
        group(add.s(1, 1)).apply_async(link=add.s(1))


def test_what_the_shim_does_not_carry_is_refused(app, gateway):
    with pytest.raises(UnsupportedOption):
        chord([group(add.s(1, 1), add.s(2, 2))], tsum.s()).apply_async()
    with pytest.raises(UnsupportedOption):
        chord([add.s(1, 1)], group(tsum.s(), tsum.s())).apply_async()
    assert gateway.published == []


@pytest.fixture
def eager(app):
    conf = app.extensions["celery"].conf
    conf.task_always_eager = True
    yield
    conf.task_always_eager = False


def test_canvas_runs_in_process_under_task_always_eager(eager, gateway):
    assert chain(add.s(4, 4), mul.s(8))().get() == 64
    assert group(add.s(i, i) for i in range(3))().get() == [0, 2, 4]
    assert chord(add.s(i, i) for i in range(3))(tsum.s()).get() == 6
    assert gateway.published == []


def test_waiting_on_a_result_reraises_a_failed_ancestor(app, client, gateway):
    failed = fail.delay()
    run_all(client, gateway)
    never_sent = AsyncResult("never-sent", parent=failed)
    with pytest.raises(ValueError):
        never_sent.get(timeout=5, interval=0.01)
