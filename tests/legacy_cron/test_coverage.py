"""With the cron path registered: what it covers, and refusals that name it."""

import pytest

from flask_app import close, create_app
from flask_app.config import ConfigError


@pytest.mark.parametrize(
    "flags",
    [
        {"QSTASH_ENABLED": True, "QSTASH_ROLLOUT_PERCENT": 50},
        {"QSTASH_ENABLED": True, "QSTASH_SHADOW": True},
        {"QSTASH_ENABLED": False},
    ],
    ids=["rollout-below-100", "shadow", "qstash-off"],
)
def test_cron_off_is_named_in_the_refusal_and_as_a_fix(app_config, flags):
    with pytest.raises(ConfigError) as refused:
        create_app(app_config | {"LEGACY_CRON_ENABLED": False} | flags)
    message = str(refused.value)
    assert "cron: none (LEGACY_CRON_ENABLED=false)" in message
    assert "or LEGACY_CRON_ENABLED=true (cron)" in message


@pytest.mark.parametrize("flags", [{"QSTASH_ENABLED": False}, {"QSTASH_SHADOW": True}])
def test_cron_on_covers_every_prebooking_whatever_qstash_does(app_config, flags):
    app = create_app(app_config | {"LEGACY_CRON_ENABLED": True} | flags)
    assert app.test_client().get("/api/health").json["paths"]["cron"] == "all"
    close(app)
