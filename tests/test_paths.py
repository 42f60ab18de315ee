"""The delivery-path registry: what each path covers, and configurations that leave some out."""

import pytest

from flask_app import close, create_app, paths
from flask_app.config import ConfigError


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ({"QSTASH_ENABLED": True, "QSTASH_ROLLOUT_PERCENT": 50}, "QSTASH_ROLLOUT_PERCENT=50"),
        ({"QSTASH_ENABLED": True, "QSTASH_SHADOW": True}, "QSTASH_SHADOW=true"),
        ({"QSTASH_ENABLED": False}, "QSTASH_ENABLED=false"),
    ],
    ids=["rollout-below-100", "shadow", "qstash-off"],
)
def test_qstash_not_taking_everyone_with_cron_off_is_refused_at_start(app_config, flags, named):
    config = app_config | {"LEGACY_CRON_ENABLED": False} | flags  # no-op once cron is retired
    with pytest.raises(ConfigError) as refused:
        create_app(config)
    message = str(refused.value)
    assert named in message
    assert "QSTASH_ROLLOUT_PERCENT=100" in message  # and says what would fix it


def test_qstash_alone_taking_everyone_is_accepted(app_config):
    app = create_app(app_config | {"LEGACY_CRON_ENABLED": False, "QSTASH_ENABLED": True})
    shown = app.test_client().get("/api/health").json["paths"]
    assert (shown["qstash"], shown["shadow"]) == ("all", "observes")
    close(app)


def test_an_arrival_is_recorded_as_its_path_says():
    assert paths.get(paths.QSTASH).executes and not paths.get(paths.SHADOW).executes
    unknown = paths.get("retired-path")  # a name from stored arrivals, no longer registered
    assert unknown.executes and unknown.reach is None


def test_adding_a_path_is_one_register_call():
    extra = paths.DeliveryPath("test-extra", "a test's own path")
    try:
        paths.register(extra)
        assert paths.get("test-extra") is extra and extra in paths.registered()
    finally:
        paths._registry.pop("test-extra")
