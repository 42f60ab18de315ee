"""The cron path's settings: owned here, so retiring the path removes them too.

A pydantic-settings model parsed by the service's one pure parser (flask_app.config);
`init_app` adds it to the app: defaults, then the environment's values when the app read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from flask import Flask
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from flask_app import config


class CronSettings(BaseSettings):
    """The legacy path's switch, secret and pacing."""

    model_config = config.SETTINGS_CONFIG

    # The endpoint executes; when false it still answers 200 so cron-job.org keeps the job.
    LEGACY_CRON_ENABLED: bool = True
    # Bearer secret cron-job.org sends; unset: the endpoint answers 503 (fail closed).
    CRON_SECRET: SecretStr | None = None
    # A tick stops arming after the budget (cron-job.org gives up after 30 s) and takes at most
    # the limit; the dispatcher fires each class's ranks the stagger apart (docs/legacy_cron.md).
    CRON_TICK_BUDGET_S: Annotated[int, Field(ge=1)] = 20
    CRON_STAGGER_MS: Annotated[int, Field(ge=0)] = 50
    CRON_BATCH_LIMIT: Annotated[int, Field(ge=1)] = 50


#: Each variable's default (CRON_SECRET has none: unset).
DEFAULTS: dict[str, Any] = config.defaults(CronSettings)


def settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Parse the cron path's variables from an environment mapping (pure).

    Raises:
        flask_app.config.ConfigError: a variable is set to something unusable.
    """
    return config.settings_from_env(environ, CronSettings)


def init_app(app: Flask) -> None:
    """Add the cron settings to the app (a test config's entries win over the defaults)."""
    config.register_settings(app, CronSettings)
