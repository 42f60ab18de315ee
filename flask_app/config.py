"""Settings: the contract's environment variables, parsed in one pure function.

The cron path's variables (LEGACY_CRON_ENABLED, CRON_*) belong to it: legacy_cron.settings.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

# The official QStash dev server's published user 1 (not secrets; see qstash_dev).
DEV_QSTASH_TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="
DEV_QSTASH_CURRENT_SIGNING_KEY = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
DEV_QSTASH_NEXT_SIGNING_KEY = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off", ""}


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


class Defaults:
    """Values in force when neither the environment nor test_config says otherwise."""

    DATABASE_URL: str | None = None  # None: SQLite file under the instance folder
    QSTASH_ENABLED = False
    QSTASH_SHADOW = False
    QSTASH_ROLLOUT_PERCENT = 100
    QSTASH_URL = "http://127.0.0.1:8080"
    QSTASH_TOKEN = DEV_QSTASH_TOKEN
    QSTASH_CURRENT_SIGNING_KEY = DEV_QSTASH_CURRENT_SIGNING_KEY
    QSTASH_NEXT_SIGNING_KEY = DEV_QSTASH_NEXT_SIGNING_KEY
    APP_BASE_URL = "http://127.0.0.1:5000"
    API_TOKEN: str | None = None
    SESSION_ENCRYPTION_KEYS: str | None = None
    AIMHARDER_BASE_URL: str | None = None
    AIMHARDER_TIMEOUT_S = 8.0
    # Prepare each booking request ahead and write it at its instant from one thread per
    # process (flask_app/aimharder/firing.py); false: every delivery thread books through httpx.
    AIMHARDER_FIRING_LINE = True
    TASK_IMPORTS = ""
    CLAIM_LEASE_SECONDS = 60
    # Database connections per process (PostgreSQL): the pool, plus overflow in bursts. Every
    # gunicorn worker, CLI and cron process has its own; their sum must stay under the
    # server's max_connections (100 by default). A delivery holds one only while it writes.
    DB_POOL_SIZE = 10
    DB_MAX_OVERFLOW = 10
    # QStash path timing (docs/qstash_path.md): the message is due QSTASH_LEAD_SECONDS before
    # the window opens (QStash fires in whole seconds, within ~1 s); prebookings opening at the
    # same instant fire QSTASH_FIRE_STAGGER_MS apart in creation order (fractions allowed: the
    # firing line writes them back-to-back in that order, ~10-40 µs each, so 10 µs keeps them
    # in order across processes without spreading them; bench/README.md); windows further ahead
    # than QSTASH_MAX_DELAY (QStash's plan limit, 7 days free) are published later by the relay.
    QSTASH_LEAD_SECONDS = 3.0
    # A crowd opening at one instant: each earlier-created twin's message is due this much
    # earlier again (capped at QSTASH_MAX_LEAD_SECONDS in all), so the app admits the crowd's
    # deliveries one after another before the instant instead of all in the same second.
    QSTASH_CROWD_LEAD_MS = 10.0
    QSTASH_MAX_LEAD_SECONDS = 60.0
    QSTASH_FIRE_STAGGER_MS = 0.01
    QSTASH_MAX_DELAY = timedelta(days=7)
    # Arrivals older than this are deleted by the daily cleanup (celery.backend_cleanup), and a
    # parity report cannot reach further back.
    ARRIVALS_RETENTION_DAYS = 90
    # Bodies larger than this are refused with 413 before they are parsed.
    MAX_CONTENT_LENGTH = 64 * 1024

    # --- gym (issue 15): the gym's clock, pre-flight, notifications --------------------------
    # Probe a box host's clock (HTTP Date headers) when one of its windows opens within
    # GYM_CLOCK_LEAD_S, with at most GYM_CLOCK_PROBES cheap requests (0: never probe), at most
    # once per GYM_CLOCK_MIN_INTERVAL_S; trust what was learnt for GYM_CLOCK_MAX_AGE_S, widened
    # by GYM_CLOCK_DRIFT_PPM of its age; fire GYM_CLOCK_MARGIN_MS after the earliest instant the
    # estimate allows (docs/gym.md).
    GYM_CLOCK_LEAD_S = 120.0
    GYM_CLOCK_PROBES = 10
    GYM_CLOCK_MIN_INTERVAL_S = 60.0
    GYM_CLOCK_MAX_AGE_S = 900.0
    GYM_CLOCK_DRIFT_PPM = 20.0
    GYM_CLOCK_MARGIN_MS = 5.0
    # Check each prebooking's stored session this long before its window opens (0: never).
    PREFLIGHT_LEAD_S = 600
    # HMAC-SHA256 key of the outcome events sent to notify_url (docs/notifications.md); unset:
    # prebookings and sessions with a notify_url are refused with 503.
    NOTIFY_SIGNING_SECRET: str | None = None
    # --- end gym -------------------------------------------------------------------------------


_BOOLS = (
    "QSTASH_ENABLED",
    "QSTASH_SHADOW",
    "TASK_ALWAYS_EAGER",
    "AIMHARDER_FIRING_LINE",
)
_STRINGS = (
    "DATABASE_URL",
    "QSTASH_URL",
    "QSTASH_TOKEN",
    "QSTASH_CURRENT_SIGNING_KEY",
    "QSTASH_NEXT_SIGNING_KEY",
    "APP_BASE_URL",
    "API_TOKEN",
    "SESSION_ENCRYPTION_KEYS",
    "AIMHARDER_BASE_URL",
    "TASK_IMPORTS",
)


def parse_bool(name: str, raw: str) -> bool:
    """Read a boolean the way operators write them (true/false, 1/0, yes/no, on/off).

    Raises:
        ConfigError: the value is none of those.
    """
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def parse_int(name: str, raw: str, *, low: int, high: int | None = None) -> int:
    """Read an integer within bounds.

    Raises:
        ConfigError: not an integer, or out of bounds.
    """
    try:
        value = int(raw.strip().rstrip("%"))
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be {bound}, not {value}")
    return value


def settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Parse the contract's variables from an environment mapping (pure: pass any dict).

    Raises:
        ConfigError: a variable is set to something unusable.
    """
    out: dict[str, Any] = {}
    for name in _STRINGS:
        value = environ.get(name)
        if value is not None and value.strip() != "":
            out[name] = value.strip()
    for name in _BOOLS:
        if name in environ:
            out[name] = parse_bool(name, environ[name])
    if "QSTASH_ROLLOUT_PERCENT" in environ:
        raw = environ["QSTASH_ROLLOUT_PERCENT"]
        out["QSTASH_ROLLOUT_PERCENT"] = parse_int("QSTASH_ROLLOUT_PERCENT", raw, low=0, high=100)
    if "CLAIM_LEASE_SECONDS" in environ:
        raw = environ["CLAIM_LEASE_SECONDS"]
        out["CLAIM_LEASE_SECONDS"] = parse_int("CLAIM_LEASE_SECONDS", raw, low=1)
    out.update(_qstash_timing(environ))
    if "AIMHARDER_TIMEOUT_S" in environ:
        raw = environ["AIMHARDER_TIMEOUT_S"]
        out["AIMHARDER_TIMEOUT_S"] = parse_float("AIMHARDER_TIMEOUT_S", raw, low=0.5, high=60)
    ints = (
        ("DB_POOL_SIZE", 1),
        ("DB_MAX_OVERFLOW", 0),
        ("ARRIVALS_RETENTION_DAYS", 1),
    )
    for name, low in ints:
        if name in environ:
            out[name] = parse_int(name, environ[name], low=low)
    out.update(_gym_settings(environ))
    return out


# --- gym (issue 15) ---------------------------------------------------------------------------
_GYM_FLOATS = (
    ("GYM_CLOCK_LEAD_S", 5.0, 3600.0),
    ("GYM_CLOCK_MIN_INTERVAL_S", 0.0, 3600.0),
    ("GYM_CLOCK_MAX_AGE_S", 1.0, 86400.0),
    ("GYM_CLOCK_DRIFT_PPM", 0.0, 1000.0),
    ("GYM_CLOCK_MARGIN_MS", 0.0, 1000.0),
)


def _gym_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The gym block's settings (GYM_CLOCK_*, PREFLIGHT_LEAD_S, NOTIFY_SIGNING_SECRET)."""
    out: dict[str, Any] = {}
    for name, low, high in _GYM_FLOATS:
        if name in environ:
            out[name] = parse_float(name, environ[name], low=low, high=high)
    if "GYM_CLOCK_PROBES" in environ:
        out["GYM_CLOCK_PROBES"] = parse_int(
            "GYM_CLOCK_PROBES", environ["GYM_CLOCK_PROBES"], low=0, high=30
        )
    if "PREFLIGHT_LEAD_S" in environ:
        out["PREFLIGHT_LEAD_S"] = parse_int(
            "PREFLIGHT_LEAD_S", environ["PREFLIGHT_LEAD_S"], low=0, high=86400
        )
    secret = environ.get("NOTIFY_SIGNING_SECRET", "").strip()
    if secret:
        if len(secret) < 32:
            raise ConfigError("NOTIFY_SIGNING_SECRET must be at least 32 characters long")
        out["NOTIFY_SIGNING_SECRET"] = secret
    return out


# --- end gym ----------------------------------------------------------------------------------


def parse_float(name: str, raw: str, *, low: float, high: float) -> float:
    """Read a number within bounds.

    Raises:
        ConfigError: not a number, or out of bounds.
    """
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, not {value:g}")
    return value


_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(name: str, raw: str) -> timedelta:
    """Read a positive duration written as QStash does (`7d`, `1d12h`, `90m`) or in seconds.

    Raises:
        ConfigError: unreadable or zero.
    """
    text = raw.strip().lower()
    if text.isdigit():
        seconds = int(text)
    elif text and _DURATION.sub("", text) == "":
        seconds = sum(int(n) * _UNIT_S[u] for n, u in _DURATION.findall(text))
    else:
        raise ConfigError(f"{name} must be a duration such as 7d, 36h or 3600, not {raw!r}")
    if seconds <= 0:
        raise ConfigError(f"{name} must be longer than zero")
    return timedelta(seconds=seconds)


def _qstash_timing(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "QSTASH_LEAD_SECONDS" in environ:
        raw = environ["QSTASH_LEAD_SECONDS"]
        out["QSTASH_LEAD_SECONDS"] = parse_float("QSTASH_LEAD_SECONDS", raw, low=1, high=60)
    if "QSTASH_CROWD_LEAD_MS" in environ:
        raw = environ["QSTASH_CROWD_LEAD_MS"]
        out["QSTASH_CROWD_LEAD_MS"] = parse_float("QSTASH_CROWD_LEAD_MS", raw, low=0, high=1000)
    if "QSTASH_MAX_LEAD_SECONDS" in environ:
        raw = environ["QSTASH_MAX_LEAD_SECONDS"]
        out["QSTASH_MAX_LEAD_SECONDS"] = parse_float(
            "QSTASH_MAX_LEAD_SECONDS", raw, low=1, high=600
        )
    if "QSTASH_FIRE_STAGGER_MS" in environ:
        raw = environ["QSTASH_FIRE_STAGGER_MS"]
        out["QSTASH_FIRE_STAGGER_MS"] = parse_float("QSTASH_FIRE_STAGGER_MS", raw, low=0, high=100)
    if "QSTASH_MAX_DELAY" in environ:
        out["QSTASH_MAX_DELAY"] = parse_duration("QSTASH_MAX_DELAY", environ["QSTASH_MAX_DELAY"])
    return out


def load_dotenv_file(root: Path) -> None:
    """Read `.env` at the project root into os.environ without overriding what is set."""
    from dotenv import load_dotenv

    env_file = root / ".env"
    if env_file.is_file():
        load_dotenv(env_file, override=False)


def default_database_url(instance_path: str) -> str:
    """The SQLite file under the instance folder used when DATABASE_URL is unset."""
    os.makedirs(instance_path, exist_ok=True)
    return f"sqlite:///{Path(instance_path) / 'prebookings.db'}"
