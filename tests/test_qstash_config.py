"""QStash path settings and the precise clock it relies on."""

from datetime import timedelta

import pytest

from flask_app.config import ConfigError, defaults, settings_from_env
from flask_app.qstash.publish import policy_from
from flask_app.timing import SystemClock


def test_qstash_timing_defaults_are_documented_values():
    found = defaults()
    assert (found["QSTASH_LEAD_SECONDS"], found["QSTASH_FIRE_STAGGER_MS"]) == (3.0, 0.01)
    assert found["QSTASH_MAX_DELAY"] == timedelta(days=7)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("7d", timedelta(days=7)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("90m", timedelta(minutes=90)),
        ("3600", timedelta(hours=1)),
        (" 365D ", timedelta(days=365)),
    ],
)
def test_max_delay_reads_qstash_style_durations(raw, value):
    assert settings_from_env({"QSTASH_MAX_DELAY": raw})["QSTASH_MAX_DELAY"] == value


@pytest.mark.parametrize("raw", ["0", "7 days", "-1d", "d7"])
def test_unreadable_max_delay_names_the_variable(raw):
    with pytest.raises(ConfigError, match="QSTASH_MAX_DELAY"):
        settings_from_env({"QSTASH_MAX_DELAY": raw})


def test_lead_and_stagger_are_read_as_numbers_within_bounds():
    env = {"QSTASH_LEAD_SECONDS": "2.5", "QSTASH_FIRE_STAGGER_MS": "0.02"}
    assert settings_from_env(env) == {"QSTASH_LEAD_SECONDS": 2.5, "QSTASH_FIRE_STAGGER_MS": 0.02}
    with pytest.raises(ConfigError, match="QSTASH_LEAD_SECONDS must be between 1 and 60"):
        settings_from_env({"QSTASH_LEAD_SECONDS": "0"})
    with pytest.raises(ConfigError, match="QSTASH_FIRE_STAGGER_MS must be a number"):
        settings_from_env({"QSTASH_FIRE_STAGGER_MS": "fast"})


def test_publish_policy_follows_the_config():
    config = {
        "APP_BASE_URL": "https://x.example.com/",
        "QSTASH_LEAD_SECONDS": 4,
        "QSTASH_MAX_DELAY": timedelta(days=1),
        "QSTASH_CROWD_LEAD_MS": 2.5,
        "QSTASH_MAX_LEAD_SECONDS": 30,
    }
    policy = policy_from(config)
    assert policy.destination == "https://x.example.com/api/qstash/prebooking-execute"
    assert (policy.lead, policy.max_delay) == (timedelta(seconds=4), timedelta(days=1))
    assert policy.crowd_lead == timedelta(milliseconds=2.5)
    assert policy.max_lead == timedelta(seconds=30)


def test_crowd_lead_settings_are_read_within_bounds():
    env = {"QSTASH_CROWD_LEAD_MS": "5", "QSTASH_MAX_LEAD_SECONDS": "90"}
    assert settings_from_env(env) == {"QSTASH_CROWD_LEAD_MS": 5.0, "QSTASH_MAX_LEAD_SECONDS": 90.0}
    with pytest.raises(ConfigError, match="QSTASH_CROWD_LEAD_MS must be between 0 and 1000"):
        settings_from_env({"QSTASH_CROWD_LEAD_MS": "-1"})
    with pytest.raises(ConfigError, match="QSTASH_MAX_LEAD_SECONDS must be between 1 and 600"):
        settings_from_env({"QSTASH_MAX_LEAD_SECONDS": "3600"})


def test_system_clock_never_wakes_before_the_instant():
    clock = SystemClock()
    for step_ms in (0, 1, 4, 15):
        target = clock.now() + timedelta(milliseconds=step_ms)
        clock.sleep_until(target)
        assert clock.now() >= target
