"""Which Flask app a shim app runs in, and the plugs that Flask app gave it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from flask import Flask, has_app_context
from flask import current_app as flask_current_app

from flask_app.shim.exceptions import ImproperlyConfigured
from flask_app.shim.plugs import Plugs

if TYPE_CHECKING:
    from flask_app.shim.app import Celery

CELERY_EXT = "celery"
PLUGS_EXT = "celery.plugs"


def flask_app_for(app: Celery) -> Flask:
    """The Flask app to run in: the active one, else the last one bound with init_app.

    Raises:
        ImproperlyConfigured: no Flask app context and no bound app.
    """
    if has_app_context():
        flask: Flask = flask_current_app._get_current_object()  # type: ignore[attr-defined]
        return flask
    if app.flask_app is None:
        raise ImproperlyConfigured("no Flask app: call flask_app.shim.init_app(app) first")
    return app.flask_app


@contextmanager
def app_context_for(app: Celery) -> Iterator[None]:
    """Enter the bound Flask app's context unless one is active (or none is bound yet)."""
    if has_app_context() or app.flask_app is None:
        yield
        return
    with app.flask_app.app_context():
        yield


def get_celery(flask_app: Flask) -> Celery:
    """The shim app bound to flask_app."""
    celery: Celery = flask_app.extensions[CELERY_EXT]
    return celery


def get_plugs(flask_app: Flask) -> Plugs:
    """The plugs flask_app gave the shim.

    Raises:
        ImproperlyConfigured: init_app was not given plugs.
    """
    plugs = flask_app.extensions.get(PLUGS_EXT)
    if not isinstance(plugs, Plugs):
        raise ImproperlyConfigured(
            "the shim has no publisher/database: call flask_app.shim.init_app(app, plugs=...)"
        )
    return plugs
