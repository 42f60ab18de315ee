"""The cron path's settings: owned here, so retiring the path removes them too.

Parsed with the service's own readers (flask_app.config), in one pure function; `init_app`
fills what the app's config does not set, from the environment unless the app is testing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from flask_app.config import parse_bool, parse_int

#: The defaults: the endpoint executes; it answers 503 until CRON_SECRET is set; a tick stops
#: launching bookings that could not finish within the budget (cron-job.org gives up after
#: 30 s), spaces launches by the stagger, and takes at most the limit.
DEFAULTS: dict[str, Any] = {
    "LEGACY_CRON_ENABLED": True,
    "CRON_SECRET": None,
    "CRON_TICK_BUDGET_S": 20,
    "CRON_STAGGER_MS": 50,
    "CRON_BATCH_LIMIT": 50,
}
_LOWEST = {"CRON_TICK_BUDGET_S": 1, "CRON_STAGGER_MS": 0, "CRON_BATCH_LIMIT": 1}


def settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Parse the cron path's variables from an environment mapping (pure).

    Raises:
        flask_app.config.ConfigError: a variable is set to something unusable.
    """
    out: dict[str, Any] = {}
    if "LEGACY_CRON_ENABLED" in environ:
        out["LEGACY_CRON_ENABLED"] = parse_bool(
            "LEGACY_CRON_ENABLED", environ["LEGACY_CRON_ENABLED"]
        )
    secret = (environ.get("CRON_SECRET") or "").strip()
    if secret:
        out["CRON_SECRET"] = secret
    for name, low in _LOWEST.items():
        if name in environ:
            out[name] = parse_int(name, environ[name], low=low)
    return out


def init_app(app: Flask) -> None:
    """Fill the cron settings the app's config lacks: environment (unless testing), defaults."""
    found = {} if app.testing else settings_from_env(os.environ)
    for name, default in DEFAULTS.items():
        app.config.setdefault(name, found.get(name, default))
