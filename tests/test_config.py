"""Typed settings: one pure parser, the contract's names, refusals naming the variable."""

import pytest

from flask_app import close, create_app
from flask_app.config import (
    DEV_QSTASH_CURRENT_SIGNING_KEY,
    DEV_QSTASH_NEXT_SIGNING_KEY,
    DEV_QSTASH_TOKEN,
    ConfigError,
    Settings,
    defaults,
    load_settings,
    settings_from_env,
)

REAL_QSTASH = {
    "QSTASH_URL": "https://qstash.upstash.io",
    "APP_BASE_URL": "https://prebook.example.com",
    "QSTASH_TOKEN": "real-token",
    "QSTASH_CURRENT_SIGNING_KEY": "sig_real_current",
    "QSTASH_NEXT_SIGNING_KEY": "sig_real_next",
}


def test_empty_environment_sets_nothing():
    assert settings_from_env({}) == {}


def test_defaults_are_the_contracts():
    found = defaults()
    assert found["QSTASH_ENABLED"] is False and found["QSTASH_SHADOW"] is False
    assert found["QSTASH_ROLLOUT_PERCENT"] == 100
    assert found["QSTASH_URL"] == "http://127.0.0.1:8080"
    assert found["APP_BASE_URL"] == "http://127.0.0.1:5000"
    assert found["QSTASH_TOKEN"] == DEV_QSTASH_TOKEN
    assert found["CLAIM_LEASE_SECONDS"] == 60
    assert "API_TOKEN" not in found and "DATABASE_URL" not in found


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("1", True), ("ON", True), ("false", False), ("0", False), ("no", False)],
)
def test_booleans_are_read_as_operators_write_them(raw, value):
    assert settings_from_env({"QSTASH_ENABLED": raw})["QSTASH_ENABLED"] is value


def test_unreadable_boolean_names_the_variable():
    with pytest.raises(ConfigError, match="QSTASH_SHADOW must be true or false, not 'maybe'"):
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


def test_secrets_are_secret_strings_that_never_print():
    settings = load_settings({"API_TOKEN": "tok-123", "SECRET_KEY": "k" * 40}, Settings)
    assert "tok-123" not in repr(settings) and "kkkk" not in str(settings.model_dump())
    assert settings.API_TOKEN is not None and settings.API_TOKEN.get_secret_value() == "tok-123"


def test_an_invalid_secret_is_refused_without_repeating_it():
    with pytest.raises(ConfigError, match="SECRET_KEY must be at least 32") as caught:
        settings_from_env({"SECRET_KEY": "short-secret"})
    assert "short-secret" not in str(caught.value)


def test_the_dev_credentials_are_fine_on_loopback():
    env = {"QSTASH_URL": "http://localhost:8080", "APP_BASE_URL": "http://127.0.0.1:5001"}
    assert settings_from_env(env)["QSTASH_URL"] == "http://localhost:8080"


def test_real_credentials_on_a_real_qstash_are_accepted():
    assert settings_from_env(REAL_QSTASH)["QSTASH_TOKEN"] == "real-token"


@pytest.mark.parametrize(
    ("name", "dev_value"),
    [
        ("QSTASH_TOKEN", DEV_QSTASH_TOKEN),
        ("QSTASH_CURRENT_SIGNING_KEY", DEV_QSTASH_CURRENT_SIGNING_KEY),
        ("QSTASH_NEXT_SIGNING_KEY", DEV_QSTASH_NEXT_SIGNING_KEY),
    ],
)
def test_a_missing_or_dev_valued_key_beyond_loopback_is_refused(name, dev_value):
    missing = {k: v for k, v in REAL_QSTASH.items() if k != name}
    for env in (missing, REAL_QSTASH | {name: dev_value}):
        with pytest.raises(ConfigError, match=f"{name}: unset or the local QStash server"):
            settings_from_env(env)


def test_dev_signing_keys_are_refused_when_deliveries_arrive_at_a_public_url():
    # QStash itself on loopback, but the webhook public: anyone could sign with the dev keys.
    with pytest.raises(ConfigError, match="QSTASH_CURRENT_SIGNING_KEY"):
        settings_from_env({"APP_BASE_URL": "https://prebook.example.com"})


@pytest.mark.parametrize("name", ["APP_BASE_URL", "QSTASH_URL"])
def test_urls_must_be_https_unless_loopback(name):
    env = REAL_QSTASH | {name: "http://prebook.example.com"}
    with pytest.raises(ConfigError, match=f"{name} must be https unless its host is loopback"):
        settings_from_env(env)


def test_a_url_that_is_no_url_is_refused():
    with pytest.raises(ConfigError, match="APP_BASE_URL must be an http"):
        settings_from_env({"APP_BASE_URL": "prebook.example.com"})


def test_several_problems_are_reported_together():
    with pytest.raises(ConfigError) as caught:
        settings_from_env({"QSTASH_ENABLED": "perhaps", "DB_POOL_SIZE": "none"})
    assert "QSTASH_ENABLED" in str(caught.value) and "DB_POOL_SIZE" in str(caught.value)


def test_the_app_does_not_start_with_dev_keys_on_a_real_qstash(monkeypatch):
    monkeypatch.setenv("DEV_ENV_FILE", "")
    for name, value in REAL_QSTASH.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("QSTASH_NEXT_SIGNING_KEY")
    with pytest.raises(ConfigError, match="QSTASH_NEXT_SIGNING_KEY"):
        create_app()


def test_the_cli_reads_the_dev_env_file_as_make_run_writes_it(monkeypatch, tmp_path):
    from flask_app import config

    dev = tmp_path / "dev.env"
    dev.write_text("QSTASH_ENABLED=true\nAPI_TOKEN=from-dev-env\nQSTASH_ROLLOUT_PERCENT=40\n")
    (tmp_path / ".env").write_text("QSTASH_ROLLOUT_PERCENT=30\n")
    monkeypatch.setenv("DEV_ENV_FILE", "dev.env")
    monkeypatch.setenv("API_TOKEN", "from-the-environment")
    found = config.read_environment(tmp_path)
    # The environment wins over .env, and .env over make run's dev.env.
    assert found["QSTASH_ENABLED"] == "true"
    assert found["API_TOKEN"] == "from-the-environment"
    assert found["QSTASH_ROLLOUT_PERCENT"] == "30"
    monkeypatch.setenv("DEV_ENV_FILE", "")
    assert "QSTASH_ENABLED" not in config.read_environment(tmp_path)


def test_shim_max_delay_follows_the_service_setting(app_config):
    from datetime import timedelta

    app = create_app(app_config | {"QSTASH_MAX_DELAY": timedelta(days=365)})
    assert app.extensions["celery"].conf.qstash_max_delay_s == 365 * 86400
    close(app)


def test_database_pool_is_sized_from_the_environment(postgres_database):
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


def test_outbox_settings_come_from_the_environment():
    found = settings_from_env({"OUTBOX_INLINE_S": "0.8", "QSTASH_DLQ_REPUBLISH": "4"})
    assert found == {"OUTBOX_INLINE_S": 0.8, "QSTASH_DLQ_REPUBLISH": 4}


def test_an_inline_outbox_bound_that_breaks_the_2_s_promise_is_refused():
    with pytest.raises(ConfigError, match="OUTBOX_INLINE_S"):
        settings_from_env({"OUTBOX_INLINE_S": "5"})
