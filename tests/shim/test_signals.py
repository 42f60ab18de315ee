"""The blinker-based signals behave as Celery's: connect forms, order, robust send."""

import pytest

from flask_app.shim.signals import Signal, task_success


@pytest.fixture
def sig():
    return Signal("test_signal")


def test_receivers_get_signal_and_sender_as_keywords(sig):
    seen = []

    def receiver(sender=None, signal=None, **kwargs):
        seen.append((signal, sender, kwargs))

    sig.connect(receiver)
    sig.send("my.task", result=3)
    assert seen == [(sig, "my.task", {"result": 3})]


def test_decorator_forms_bare_and_with_options(sig):
    calls = []

    @sig.connect
    def any_sender(sender=None, **kwargs):
        calls.append(("any", sender))

    @sig.connect(sender="a.task", weak=False)
    def only_a(sender=None, **kwargs):
        calls.append(("only_a", sender))

    sig.send("a.task")
    sig.send("b.task")
    assert calls == [("any", "a.task"), ("only_a", "a.task"), ("any", "b.task")]


def test_receivers_run_in_connection_order(sig):
    calls = []
    receivers = []
    for n in range(12):

        def receiver(n=n, **kwargs):
            calls.append(n)

        receivers.append(receiver)
        sig.connect(receiver, weak=False)
    sig.send(None)
    assert calls == list(range(12))


def test_a_failing_receiver_is_returned_and_the_others_still_run(sig):
    def broken(**kwargs):
        raise RuntimeError("boom")

    def fine(**kwargs):
        return "ok"

    sig.connect(broken)
    sig.connect(fine)
    responses = sig.send(None)
    assert responses[0][0] is broken and isinstance(responses[0][1], RuntimeError)
    assert responses[1] == (fine, "ok")


def test_dispatch_uid_connects_once_and_disconnects(sig):
    calls = []

    def receiver(**kwargs):
        calls.append(1)

    sig.connect(receiver, dispatch_uid="uid")
    sig.connect(receiver, dispatch_uid="uid")
    sig.send(None)
    assert calls == [1]
    assert sig.disconnect(dispatch_uid="uid") is True
    assert sig.disconnect(dispatch_uid="uid") is False
    sig.send(None)
    assert calls == [1]


def test_weak_receivers_go_away_with_their_function(sig):
    def make():
        def receiver(**kwargs):
            return 1

        return receiver

    sig.connect(make())
    assert sig.send(None) == []


def test_blinkers_connected_to_works_with_celery_style_receivers():
    seen = []

    def receiver(sender=None, **kwargs):
        seen.append(kwargs["result"])

    with task_success.connected_to(receiver):
        task_success.send("x", result=1)
    task_success.send("x", result=2)
    assert seen == [1]


def test_has_listeners_by_sender(sig):
    def receiver(**kwargs):
        return None

    assert not sig.has_listeners()
    sig.connect(receiver, sender="s")
    assert sig.has_listeners("s") and not sig.has_listeners("other")
