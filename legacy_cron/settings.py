"""The legacy path's own settings (CRON_*): they go when this package is deleted."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from flask_app.config import SETTINGS_CONFIG


class CronSettings(BaseSettings):
    """The legacy tick's secret and pacing."""

    model_config = SETTINGS_CONFIG

    # Bearer secret cron-job.org sends; unset: the endpoint answers 503 (fail closed).
    CRON_SECRET: SecretStr | None = None
    # Stop launching bookings that could not finish within the budget (cron-job.org gives up
    # after 30 s), space launches by the stagger, take at most the limit.
    CRON_TICK_BUDGET_S: Annotated[int, Field(ge=1)] = 20
    CRON_STAGGER_MS: Annotated[int, Field(ge=0)] = 50
    CRON_BATCH_LIMIT: Annotated[int, Field(ge=1)] = 50
