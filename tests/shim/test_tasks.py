"""Defining, calling, sending and tracing tasks (eager mode and the fake Gateway)."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest
from flask import current_app as flask_current_app

from flask_app.shim import Celery, EagerResult, Task, current_task, shared_task, states, uuid
from flask_app.shim.exceptions import (
    Ignore,
    MaxRetriesExceededError,
    Reject,
    UnsupportedOption,
)

EVENTS: list[str] = []


@shared_task
def add(x, y):
    return x + y


@shared_task(name="custom.mul")
def mul(x, y):
    return x * y


@shared_task(bind=True)
def whoami(self, value=None):
    return {
        "id": self.request.id,
        "retries": self.request.retries,
        "eager": self.request.is_eager,
        "direct": self.request.called_directly,
        "name": self.name,
        "value": value,
    }


@shared_task(bind=True, max_retries=2, default_retry_delay=5)
def flaky(self, fail_times):
    if self.request.retries < fail_times:
        raise self.retry(exc=ValueError(f"try {self.request.retries}"))
    return self.request.retries


@shared_task
def boom(message="boom"):
    raise RuntimeError(message)


@shared_task
def echo(*args, **kwargs):
    return [list(args), kwargs]


@shared_task
def ignored():
    raise Ignore()


@shared_task
def rejected():
    raise Reject("bad", requeue=False)


@shared_task
def in_context():
    return flask_current_app.name, current_task.name


class Tracked(Task):
    def before_start(self, task_id, args, kwargs):
        EVENTS.append("before_start")

    def on_success(self, retval, task_id, args, kwargs):
        EVENTS.append("on_success")

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        EVENTS.append("on_failure")

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        EVENTS.append("on_retry")

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        EVENTS.append(f"after_return:{status}")


@shared_task(base=Tracked, bind=True, max_retries=1)
def tracked(self, mode):
    EVENTS.append("body")
    if mode == "fail":
        raise KeyError("k")
    if mode == "retry" and self.request.retries == 0:
        raise self.retry(countdown=1)
    return mode


class Defaults(Task):
    max_retries = 7
    default_retry_delay = 11


@shared_task(base=Defaults)
def with_defaults():
    return None


@pytest.fixture(autouse=True)
def _clear_events():
    EVENTS.clear()


# -- definition --------------------------------------------------------------------------------


def test_bare_decorator_returns_a_task_named_after_module_and_function():
    assert isinstance(add, Task) and add.name == "tests.shim.test_tasks.add"
    assert add(2, 3) == 5


def test_name_option_and_app_task_forms():
    app = Celery("proj", set_as_current=False)

    @app.task
    def plain():
        return 1

    @app.task(name="proj.opts", max_retries=9)
    def opts():
        return 2

    assert mul.name == "custom.mul"
    assert plain.name == "tests.shim.test_tasks.plain" and app.tasks[plain.name] is plain
    assert opts.max_retries == 9 and opts() == 2


def test_registering_a_name_twice_keeps_the_first():
    app = Celery("dup", set_as_current=False)

    @app.task(name="dup.x")
    def first():
        return 1

    @app.task(name="dup.x")
    def second():
        return 2

    assert second is first and second() == 1


def test_main_replaces_dunder_main_in_names():
    app = Celery("mymain", set_as_current=False)

    def f():
        return None

    f.__module__ = "__main__"
    assert app.task(f).name == "mymain.f"


def test_base_class_attributes_are_defaults():
    assert (with_defaults.max_retries, with_defaults.default_retry_delay) == (7, 11)
    assert isinstance(with_defaults, Defaults)


def test_task_cls_replaces_the_base_for_an_app():
    app = Celery("cls", task_cls=Defaults, set_as_current=False)

    @app.task
    def t():
        return None

    assert isinstance(t, Defaults)


@pytest.mark.parametrize(
    "option",
    [
        {"soft_time_limit": 5},
        {"priority": 3},
        {"rate_limit": "2.5/s"},
        {"rate_limit": "10/d"},
        {"pydantic": True},
        {"serializer": "pickle"},
        {"queue": "emails"},
        {"reject_on_worker_lost": True},
    ],
)
def test_options_the_shim_cannot_honour_fail_at_decoration(option):
    with pytest.raises(UnsupportedOption):
        shared_task(**option)(lambda: None)


def test_unknown_decorator_options_are_type_errors():
    with pytest.raises(TypeError, match="unknown option"):
        shared_task(colour="blue")(lambda: None)


def test_direct_call_runs_inline_with_a_direct_request(app):
    assert whoami(1) == {
        "id": None,
        "retries": 0,
        "eager": False,
        "direct": True,
        "name": whoami.name,
        "value": 1,
    }


def test_task_bodies_run_inside_the_flask_app_context(app):
    assert in_context() == (app.name, in_context.name)
    assert in_context.apply().get() == (app.name, in_context.name)


# -- apply / eager --------------------------------------------------------------------------


def test_apply_returns_an_eager_result_with_the_given_id(app):
    result = whoami.apply(kwargs={"value": 3}, task_id="t-1")
    assert isinstance(result, EagerResult) and result.id == "t-1"
    assert result.get() == {
        "id": "t-1",
        "retries": 0,
        "eager": True,
        "direct": False,
        "name": whoami.name,
        "value": 3,
    }
    assert result.successful() and result.ready() and result.state == states.SUCCESS


def test_apply_stores_failures_on_the_result_unless_propagating(app):
    result = boom.apply(("bad",))
    assert result.failed() and isinstance(result.result, RuntimeError)
    assert "RuntimeError: bad" in result.traceback
    with pytest.raises(RuntimeError, match="bad"):
        result.get()
    assert isinstance(result.get(propagate=False), RuntimeError)


def test_eager_propagates_reraises_at_once(app):
    app.extensions["celery"].conf.task_eager_propagates = True
    try:
        with pytest.raises(RuntimeError, match="now"):
            boom.apply(("now",))
    finally:
        app.extensions["celery"].conf.task_eager_propagates = False


def test_eager_retries_rerun_with_the_same_id_until_success(app, recorder):
    result = flaky.apply((2,), task_id="same")
    assert result.get() == 2 and result.id == "same"
    assert recorder.names.count("task_retry") == 2
    assert [kw["task_id"] for kw in recorder.of("task_prerun")] == ["same"] * 3


def test_eager_retries_past_the_limit_fail_with_the_retry_exc(app):
    result = flaky.apply((5,))
    assert result.failed() and isinstance(result.result, ValueError)
    assert str(result.result) == "try 2"


def test_retry_without_exc_past_the_limit_raises_max_retries_exceeded(app):
    @shared_task(bind=True, max_retries=0, name="t.noexc")
    def noexc(self):
        raise self.retry()

    result = noexc.apply(
        (),
    )
    assert isinstance(result.result, MaxRetriesExceededError)


def test_retry_on_a_direct_call_reraises(app):
    with pytest.raises(ValueError, match="try 0"):
        flaky(1)


def test_handlers_run_in_celerys_order(app):
    tracked.apply(("ok",))
    assert EVENTS == ["before_start", "body", "on_success", "after_return:SUCCESS"]
    EVENTS.clear()
    tracked.apply(("fail",))
    assert EVENTS == ["before_start", "body", "on_failure", "after_return:FAILURE"]
    EVENTS.clear()
    tracked.apply(("retry",))
    assert EVENTS == [
        "before_start",
        "body",
        "on_retry",
        "before_start",
        "body",
        "on_success",
        "after_return:SUCCESS",
    ]


def test_always_eager_round_trips_arguments_through_celery_json(app):
    app.extensions["celery"].conf.task_always_eager = True
    try:
        at = datetime(2026, 11, 30, 7, tzinfo=UTC)
        key = UUID("12345678-1234-5678-1234-567812345678")
        got = echo.delay((1, 2), at, date(2026, 1, 1), Decimal("9.99"), key, b"raw", k=at).get()
        assert got == [[[1, 2], at, date(2026, 1, 1), Decimal("9.99"), key, b"raw"], {"k": at}]
        with pytest.raises(TypeError, match="not JSON serializable"):
            echo.delay(object())
    finally:
        app.extensions["celery"].conf.task_always_eager = False


def test_strict_typing_checks_arguments_at_the_call(app):
    with pytest.raises(TypeError, match="missing a required argument"):
        add.delay(1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        add.apply_async((1, 2), {"z": 3})


def test_args_and_kwargs_types_are_checked(app):
    with pytest.raises(TypeError, match="list or tuple"):
        add.apply_async("12")
    with pytest.raises(TypeError, match="mapping"):
        add.apply_async((1, 2), [("a", 1)])


def test_ignore_and_reject_store_nothing_and_still_fire_postrun(app, recorder):
    assert ignored.apply().state == states.IGNORED
    assert rejected.apply().state == states.REJECTED
    assert recorder.names == ["task_prerun", "task_postrun"] * 2


def test_eager_signal_order_for_success_and_failure(app, recorder):
    add.apply((1, 2))
    assert recorder.names == ["task_prerun", "task_success", "task_postrun"]
    assert recorder.of("task_success") == [{"result": 3}]
    assert recorder.of("task_postrun")[0]["state"] == states.SUCCESS
    recorder.events.clear()
    boom.apply()
    assert recorder.names == ["task_prerun", "task_failure", "task_postrun"]
    failure = recorder.of("task_failure")[0]
    assert isinstance(failure["exception"], RuntimeError) and failure["einfo"].traceback


def test_propagating_eager_failure_fires_postrun_with_no_state(app, recorder):
    with pytest.raises(RuntimeError):
        boom.apply(throw=True)
    assert recorder.names == ["task_prerun", "task_postrun", "task_internal_error"]
    assert recorder.of("task_postrun")[0]["state"] is None


def test_autoretry_uses_celerys_backoff(app, recorder):
    @shared_task(
        bind=True,
        name="t.auto",
        autoretry_for=(ConnectionError,),
        retry_backoff=True,
        retry_jitter=False,
        max_retries=3,
    )
    def auto(self):
        if self.request.retries < 3:
            raise ConnectionError("down")
        return "up"

    assert auto.apply().get() == "up"
    assert [kw["reason"].when for kw in recorder.of("task_retry")] == [1, 2, 4]


def test_dont_autoretry_for_wins(app):
    @shared_task(name="t.dont", autoretry_for=(Exception,), dont_autoretry_for=(KeyError,))
    def dont():
        raise KeyError("x")

    assert dont.apply().failed()


def test_uuid_helper_makes_uuid4_strings():
    assert UUID(uuid()).version == 4


def test_link_signatures_apply_the_parent_result_first(app):
    app.extensions["celery"].conf.task_always_eager = True
    try:
        seen = []

        @shared_task(name=f"t.collect.{uuid()}")
        def collect(*args):
            seen.append(args)

        add.apply_async((1, 2), link=[collect.s("x"), collect.si("y")])
        assert seen == [(3, "x"), ("y",)]
    finally:
        app.extensions["celery"].conf.task_always_eager = False


def test_errbacks_with_several_parameters_run_inline_with_request_exc_traceback(app):
    seen = []

    @shared_task(name=f"t.errback.{uuid()}")
    def on_error(request, exc, traceback):
        seen.append((request.id, type(exc).__name__, "RuntimeError" in traceback))

    boom.apply(task_id="e-1", link_error=on_error.s())
    assert seen == [("e-1", "RuntimeError", True)]


def test_chunks_and_maps_fail_loudly():
    from flask_app.shim import chunks, xmap, xstarmap

    for refused in (chunks, xmap, xstarmap):
        with pytest.raises(UnsupportedOption):
            refused(add, [(1, 2)])
    with pytest.raises(UnsupportedOption):
        add.chunks([(1, 2)], 1)


def test_timedelta_is_not_json_so_it_fails_at_send_time(app):
    with pytest.raises(TypeError):
        echo.apply_async((timedelta(1),))
