import pytest

from flask_app.config import ConfigError, settings_from_env


def test_empty_environment_sets_nothing():
    assert settings_from_env({}) == {}


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("1", True), ("ON", True), ("false", False), ("0", False), ("no", False)],
)
def test_booleans_are_read_as_operators_write_them(raw, value):
    assert settings_from_env({"QSTASH_ENABLED": raw})["QSTASH_ENABLED"] is value


def test_unreadable_boolean_names_the_variable():
    with pytest.raises(ConfigError, match="QSTASH_SHADOW must be true or false"):
        settings_from_env({"QSTASH_SHADOW": "maybe"})


@pytest.mark.parametrize(("raw", "value"), [("0", 0), ("25", 25), ("100", 100), ("30%", 30)])
def test_rollout_percent_accepts_0_to_100(raw, value):
    assert settings_from_env({"QSTASH_ROLLOUT_PERCENT": raw})["QSTASH_ROLLOUT_PERCENT"] == value


@pytest.mark.parametrize("raw", ["101", "-1", "half"])
def test_rollout_percent_out_of_range_is_an_error(raw):
    with pytest.raises(ConfigError, match="QSTASH_ROLLOUT_PERCENT"):
        settings_from_env({"QSTASH_ROLLOUT_PERCENT": raw})


def test_blank_strings_mean_unset():
    assert "API_TOKEN" not in settings_from_env({"API_TOKEN": "  "})


def test_claim_lease_must_be_positive():
    with pytest.raises(ConfigError, match="CLAIM_LEASE_SECONDS must be at least 1"):
        settings_from_env({"CLAIM_LEASE_SECONDS": "0"})


def test_aimharder_timeout_is_read_from_the_environment():
    assert settings_from_env({"AIMHARDER_TIMEOUT_S": "2.5"})["AIMHARDER_TIMEOUT_S"] == 2.5
    with pytest.raises(ConfigError, match="AIMHARDER_TIMEOUT_S"):
        settings_from_env({"AIMHARDER_TIMEOUT_S": "0"})


def test_shim_max_delay_follows_the_service_setting(app_config):
    from datetime import timedelta

    from flask_app import create_app

    app = create_app(app_config | {"QSTASH_MAX_DELAY": timedelta(days=365)})
    assert app.extensions["celery"].conf.qstash_max_delay_s == 365 * 86400
    app.extensions["db"].engine.dispose()


def test_database_pool_is_sized_from_the_environment(postgres_database):
    from flask_app import create_app

    env = settings_from_env({"DB_POOL_SIZE": "4", "DB_MAX_OVERFLOW": "2"})
    assert env == {"DB_POOL_SIZE": 4, "DB_MAX_OVERFLOW": 2}
    with pytest.raises(ConfigError, match="DB_POOL_SIZE must be at least 1"):
        settings_from_env({"DB_POOL_SIZE": "0"})
    app = create_app({"TESTING": True, "DATABASE_URL": postgres_database} | env)
    engine = app.extensions["db"].engine
    # 4 kept, 2 more in bursts: at most 6 server connections per process, whatever the threads.
    assert (engine.pool.size(), engine.pool._max_overflow) == (4, 2)  # noqa: SLF001
    engine.dispose()


def test_gym_settings_are_read_and_bounded():
    out = settings_from_env(
        {
            "GYM_CLOCK_LEAD_S": "90",
            "GYM_CLOCK_PROBES": "0",
            "GYM_CLOCK_MARGIN_MS": "2.5",
            "GYM_CLOCK_DRIFT_PPM": "10",
            "PREFLIGHT_LEAD_S": "300",
        }
    )
    assert out == {
        "GYM_CLOCK_LEAD_S": 90.0,
        "GYM_CLOCK_PROBES": 0,
        "GYM_CLOCK_MARGIN_MS": 2.5,
        "GYM_CLOCK_DRIFT_PPM": 10.0,
        "PREFLIGHT_LEAD_S": 300,
    }
    for name, bad in (
        ("GYM_CLOCK_PROBES", "31"),
        ("GYM_CLOCK_MARGIN_MS", "-1"),
        ("PREFLIGHT_LEAD_S", "x"),
    ):
        with pytest.raises(ConfigError, match=name):
            settings_from_env({name: bad})
