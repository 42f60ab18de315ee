"""The app object: settings, registry, send_task, periodic tasks, Flask integration."""

from datetime import timedelta

import pytest
from flask import current_app as flask_current_app

from flask_app.shim import Celery, Task, current_app, shared_task, states
from flask_app.shim.exceptions import UnsupportedOption
from flask_app.shim.schedules import crontab

CALLS: list[str] = []


class ContextTask(Task):
    """The Flask docs' pattern: __call__ enters the app context, then runs the body."""

    def __call__(self, *args, **kwargs):
        CALLS.append("ContextTask.__call__")
        with flask_current_app.app_context():
            return self.run(*args, **kwargs)


@shared_task(base=ContextTask, name="app.ctx", bind=True)
def ctx_task(self, x):
    return (x, self.request.id is not None)


@shared_task(name="app.tracked", track_started=True, bind=True)
def tracked(self):
    from flask_app.shim import AsyncResult

    return AsyncResult(self.request.id).state


def test_config_from_object_with_a_namespace_reads_prefixed_upper_case_keys():
    app = Celery("cfg", set_as_current=False)
    app.config_from_object({"CELERY_TASK_ALWAYS_EAGER": True, "OTHER": 1}, namespace="CELERY")
    assert app.conf.task_always_eager is True and "other" not in app.conf


def test_config_from_object_reads_lower_case_attributes_of_modules():
    import types

    module = types.SimpleNamespace(task_ignore_result=True, BROKER="x", timezone="Europe/Madrid")
    app = Celery("cfg2", set_as_current=False)
    app.config_from_object(module)
    assert app.conf.task_ignore_result is True and app.conf.timezone == "Europe/Madrid"
    assert app.now().tzinfo.key == "Europe/Madrid"


@pytest.mark.parametrize(
    "setting",
    [{"task_serializer": "pickle"}, {"accept_content": ["pickle"]}, {"task_routes": {"a": "b"}}],
)
def test_settings_the_shim_cannot_honour_are_refused(setting):
    with pytest.raises(UnsupportedOption):
        Celery("bad", set_as_current=False).conf.update(setting)


def test_broker_arguments_are_accepted_and_ignored():
    app = Celery("b", broker="redis://x", backend="redis://y", set_as_current=False)
    assert app.main == "b"


def test_set_default_rebinds_shared_tasks_and_current_app(app):
    before = current_app._get_current_object()
    other = Celery("other", set_as_current=False)
    other.set_default()
    try:
        assert current_app.main == "other" and ctx_task.app is other
    finally:
        before.set_default()


def test_flask_docs_context_task_pattern_works_through_the_tracer(app):
    CALLS.clear()
    assert ctx_task.apply((1,)).get() == (1, True)
    assert CALLS[0] == "ContextTask.__call__"


def test_track_started_stores_started_while_running(app):
    conf = app.extensions["celery"].conf
    conf.task_store_eager_result = True
    try:
        assert tracked.apply().get() == states.STARTED
    finally:
        conf.task_store_eager_result = False


def test_add_periodic_task_writes_a_beat_entry():
    app = Celery("beat", set_as_current=False)
    name = app.add_periodic_task(crontab(0, 7), ctx_task.s(5), name="daily")
    entry = app.conf.beat_schedule[name]
    assert (entry["task"], entry["args"]) == ("app.ctx", (5,))


def test_send_task_sends_by_name(app, gateway):
    result = app.extensions["celery"].send_task("remote.only", args=(1,), countdown=5)
    [(_, msg)] = gateway.published
    assert msg.body["task"] == "remote.only" and msg.body["id"] == result.id


def test_autodiscover_imports_related_modules():
    app = Celery("disc", set_as_current=False)
    app.autodiscover_tasks(["examples.celery_app"], related_name="shim_tasks")
    app.autodiscover_tasks(["examples"], related_name="no_such_module")
    assert "examples.celery_app.shim_tasks.add_together" in app.tasks


def test_states_compare_by_celerys_precedence():
    assert states.state(states.SUCCESS) > states.state(states.PENDING)
    assert states.state("PROGRESS") > states.state(states.STARTED)
    assert states.READY_STATES == {states.SUCCESS, states.FAILURE, states.REVOKED}


def test_max_delay_follows_the_flask_config(app_config):
    from flask_app import close, create_app

    other = create_app(app_config | {"QSTASH_MAX_DELAY_S": 60})
    try:
        assert other.extensions["celery"].conf.qstash_max_delay_s == 60
        with other.app_context(), pytest.raises(UnsupportedOption, match="maximum delay"):
            ctx_task.apply_async((1,), countdown=120)
    finally:
        close(other)
        other.extensions["celery"].conf.qstash_max_delay_s = 7 * 24 * 3600


def test_interval_is_a_timedelta():
    from flask_app.shim.schedules import schedule

    assert schedule(300).run_every == timedelta(minutes=5)
