"""Settings: CONTRACT.md's environment variables as typed pydantic-settings models.

`settings_from_env(environ)` is the one pure parser (hand it any dict). A package that owns
settings of its own (legacy_cron: LEGACY_CRON_ENABLED, CRON_*) defines a `BaseSettings` model
with `model_config = SETTINGS_CONFIG` and adds it with `register_settings(app, Model)` from its
`init_app`, so deleting the package deletes its settings.

Secrets are `SecretStr` in the models, so a settings object, its dump and every error message
show `**********`. Flask's config holds the plain values, as Flask expects (`SECRET_KEY` is a
plain string there too); the JSON log formatter scrubs them (flask_app/observe/logs.py).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

from flask import Flask
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

# The official QStash dev server's published user 1 (not secrets; see qstash_dev).
DEV_QSTASH_TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="
DEV_QSTASH_CURRENT_SIGNING_KEY = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
DEV_QSTASH_NEXT_SIGNING_KEY = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"
DEV_QSTASH_VALUES = {
    "QSTASH_TOKEN": DEV_QSTASH_TOKEN,
    "QSTASH_CURRENT_SIGNING_KEY": DEV_QSTASH_CURRENT_SIGNING_KEY,
    "QSTASH_NEXT_SIGNING_KEY": DEV_QSTASH_NEXT_SIGNING_KEY,
}
#: Written by `make run` (scripts/devstack.py); read by every `flask --app wsgi ...` too.
DEV_ENV_FILE = "instance/dev.env"
_EXT_ENVIRON = "settings.environ"

# Variable names are the contract's (upper case, exact); unknown variables are ignored.
SETTINGS_CONFIG = SettingsConfigDict(
    case_sensitive=True, extra="ignore", env_ignore_empty=True, validate_default=True
)

PositiveInt = Annotated[int, Field(ge=1)]
S = TypeVar("S", bound=BaseSettings)


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


class Settings(BaseSettings):
    """The service's own variables (CONTRACT.md), with their defaults."""

    model_config = SETTINGS_CONFIG

    DATABASE_URL: str | None = None  # None: SQLite file under the instance folder
    QSTASH_ENABLED: bool = False
    QSTASH_SHADOW: bool = False
    QSTASH_ROLLOUT_PERCENT: Annotated[int, Field(ge=0, le=100)] = 100
    QSTASH_URL: str = "http://127.0.0.1:8080"
    QSTASH_TOKEN: SecretStr = SecretStr(DEV_QSTASH_TOKEN)
    QSTASH_CURRENT_SIGNING_KEY: SecretStr = SecretStr(DEV_QSTASH_CURRENT_SIGNING_KEY)
    QSTASH_NEXT_SIGNING_KEY: SecretStr = SecretStr(DEV_QSTASH_NEXT_SIGNING_KEY)
    # Outbound calls to QStash are bounded: create and cancel answer within connect + read.
    QSTASH_CONNECT_TIMEOUT_S: Annotated[float, Field(ge=0.05, le=10)] = 0.5
    QSTASH_READ_TIMEOUT_S: Annotated[float, Field(ge=0.1, le=30)] = 1.0
    APP_BASE_URL: str = "http://127.0.0.1:5000"
    API_TOKEN: SecretStr | None = None
    # Signs the admin page's session cookie (/admin/login); unset: the login answers 503.
    SECRET_KEY: SecretStr | None = None
    SESSION_ENCRYPTION_KEYS: SecretStr | None = None
    AIMHARDER_BASE_URL: str | None = None
    AIMHARDER_TIMEOUT_S: Annotated[float, Field(ge=0.5, le=60)] = 8.0
    # Prepare each booking request ahead and write it at its instant from one thread per
    # process (flask_app/aimharder/firing.py); false: every delivery thread books through httpx.
    AIMHARDER_FIRING_LINE: bool = True
    TASK_IMPORTS: str = ""
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"  # JSON lines on stderr
    TASK_ALWAYS_EAGER: bool | None = None  # None: the shim's own setting (Celery's default)
    CLAIM_LEASE_SECONDS: PositiveInt = 60
    # Database connections per process (PostgreSQL): the pool, plus overflow in bursts. Every
    # gunicorn worker, CLI and cron process has its own; their sum must stay under the
    # server's max_connections (100 by default). A delivery holds one only while it writes.
    DB_POOL_SIZE: PositiveInt = 10
    DB_MAX_OVERFLOW: Annotated[int, Field(ge=0)] = 10
    # QStash path timing (docs/qstash_path.md): the message is due QSTASH_LEAD_SECONDS before
    # the window opens (QStash fires in whole seconds, within ~1 s); prebookings opening at the
    # same instant fire QSTASH_FIRE_STAGGER_MS apart in creation order (fractions allowed: the
    # firing line writes them back-to-back in that order, ~10-40 µs each, so 10 µs keeps them
    # in order across processes without spreading them; bench/README.md); windows further ahead
    # than QSTASH_MAX_DELAY (QStash's plan limit, 7 days free) are published later by the relay.
    QSTASH_LEAD_SECONDS: Annotated[float, Field(ge=1, le=60)] = 3.0
    # A crowd opening at one instant: each earlier-created twin's message is due this much
    # earlier again (capped at QSTASH_MAX_LEAD_SECONDS in all), so the app admits the crowd's
    # deliveries one after another before the instant instead of all in the same second.
    QSTASH_CROWD_LEAD_MS: Annotated[float, Field(ge=0, le=1000)] = 10.0
    QSTASH_MAX_LEAD_SECONDS: Annotated[float, Field(ge=1, le=600)] = 60.0
    QSTASH_FIRE_STAGGER_MS: Annotated[float, Field(ge=0, le=100)] = 0.01
    QSTASH_MAX_DELAY: timedelta = timedelta(days=7)
    # Arrivals older than this are deleted by the daily cleanup (celery.backend_cleanup), and a
    # parity report cannot reach further back.
    ARRIVALS_RETENTION_DAYS: PositiveInt = 90
    # The outbox (flask_app/qstash/outbox.py): a create or cancel makes its QStash call inline
    # for at most OUTBOX_INLINE_S (the API answers within 2 s whatever QStash does); what is
    # still owed is retried by every process's runner each OUTBOX_INTERVAL_S, backing off, up
    # to OUTBOX_MAX_ATTEMPTS times. A message that died in QStash's DLQ is published again up
    # to QSTASH_DLQ_REPUBLISH times (reconciled every QSTASH_DLQ_INTERVAL_S), then failed.
    OUTBOX_INLINE_S: Annotated[float, Field(ge=0, le=1.9)] = 1.5
    OUTBOX_INTERVAL_S: Annotated[float, Field(ge=0.1, le=60)] = 1.0
    OUTBOX_MAX_ATTEMPTS: Annotated[int, Field(ge=1, le=100)] = 10
    QSTASH_DLQ_REPUBLISH: Annotated[int, Field(ge=0, le=10)] = 2
    QSTASH_DLQ_INTERVAL_S: Annotated[float, Field(ge=5, le=3600)] = 60.0

    # --- gym (issue 15): the gym's clock, pre-flight, notifications --------------------------
    # Probe a box host's clock (HTTP Date headers) when one of its windows opens within
    # GYM_CLOCK_LEAD_S, with at most GYM_CLOCK_PROBES cheap requests (0: never probe), at most
    # once per GYM_CLOCK_MIN_INTERVAL_S; trust what was learnt for GYM_CLOCK_MAX_AGE_S, widened
    # by GYM_CLOCK_DRIFT_PPM of its age; fire GYM_CLOCK_MARGIN_MS after the earliest instant the
    # estimate allows (docs/gym.md).
    GYM_CLOCK_LEAD_S: Annotated[float, Field(ge=5, le=3600)] = 120.0
    GYM_CLOCK_PROBES: Annotated[int, Field(ge=0, le=30)] = 10
    GYM_CLOCK_MIN_INTERVAL_S: Annotated[float, Field(ge=0, le=3600)] = 60.0
    GYM_CLOCK_MAX_AGE_S: Annotated[float, Field(ge=1, le=86400)] = 900.0
    GYM_CLOCK_DRIFT_PPM: Annotated[float, Field(ge=0, le=1000)] = 20.0
    GYM_CLOCK_MARGIN_MS: Annotated[float, Field(ge=0, le=1000)] = 5.0
    # Check each prebooking's stored session this long before its window opens (0: never).
    PREFLIGHT_LEAD_S: Annotated[int, Field(ge=0, le=86400)] = 600
    # HMAC-SHA256 key of the outcome events sent to notify_url (docs/notifications.md); unset:
    # prebookings and sessions with a notify_url are refused with 503.
    NOTIFY_SIGNING_SECRET: SecretStr | None = None

    @field_validator("NOTIFY_SIGNING_SECRET")
    @classmethod
    def _notify_secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    # --- end gym -------------------------------------------------------------------------------

    @field_validator("QSTASH_ROLLOUT_PERCENT", mode="before")
    @classmethod
    def _percent(cls, value: Any) -> Any:
        return value.strip().rstrip("%") if isinstance(value, str) else value

    @field_validator("QSTASH_MAX_DELAY", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("QSTASH_URL", "APP_BASE_URL")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://example.com")
        if parts.scheme != "https" and not is_loopback_url(value):
            raise ValueError("must be https unless its host is loopback (127.0.0.1, localhost)")
        return value

    @field_validator("SECRET_KEY")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError('must be at least 32 characters (python -c "import secrets; '
                             'print(secrets.token_urlsafe(32))")')  # fmt: skip
        return value

    @model_validator(mode="after")
    def _no_dev_credentials_beyond_loopback(self) -> Settings:
        """The dev server's published token and keys would let anyone sign our deliveries."""
        if is_loopback_url(self.QSTASH_URL) and is_loopback_url(self.APP_BASE_URL):
            return self
        dev = [n for n, v in DEV_QSTASH_VALUES.items() if getattr(self, n).get_secret_value() == v]
        if dev:
            raise ConfigError(
                f"{', '.join(dev)}: unset or the local QStash server's published value, which "
                "is allowed only when QSTASH_URL and APP_BASE_URL are loopback; set the real "
                "values from the Upstash console"
            )
        return self


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is this machine (127.0.0.0/8, ::1, localhost)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(raw: str) -> timedelta:
    """Read a positive duration written as QStash does (`7d`, `1d12h`, `90m`) or in seconds.

    Raises:
        ValueError: unreadable or zero.
    """
    text = raw.strip().lower()
    if text.isdigit():
        seconds = int(text)
    elif text and _DURATION.sub("", text) == "":
        seconds = sum(int(n) * _UNIT_S[u] for n, u in _DURATION.findall(text))
    else:
        raise ValueError("must be a duration such as 7d, 36h or 3600")
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return timedelta(seconds=seconds)


# --- parsing --------------------------------------------------------------------------------


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of os.environ.

    Values are stripped, and blank ones mean unset (as operators write them in .env files).
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = {k: v.strip() for k, v in environ.items() if v and v.strip()}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return dict(self._environ)


def load_settings(environ: Mapping[str, str], model: type[S]) -> S:
    """The typed settings a mapping describes (pure: os.environ is not read).

    Raises:
        ConfigError: a variable is set to something unusable; the message names it.
    """
    try:
        return model(_build_sources=((_MappingSource(model, environ),), {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, model)) from None


def settings_from_env(
    environ: Mapping[str, str], model: type[BaseSettings] = Settings
) -> dict[str, Any]:
    """The Flask config entries the mapping sets explicitly (pure: hand it any dict).

    Raises:
        ConfigError: a variable is set to something unusable; the message names it.
    """
    return as_config(load_settings(environ, model), exclude_unset=True)


def as_config(settings: BaseSettings, *, exclude_unset: bool = False) -> dict[str, Any]:
    """Flask config entries: secrets unwrapped (Flask and the SDKs want plain strings).

    Unset optional values (None) are left out, so consumers' `.get()` defaults apply.
    """
    out: dict[str, Any] = {}
    for name in settings.model_fields_set if exclude_unset else type(settings).model_fields:
        value = getattr(settings, name)
        if value is not None:
            out[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    return out


def defaults(model: type[BaseSettings] = Settings) -> dict[str, Any]:
    """Each variable's default, as Flask config entries (None-valued ones left out)."""
    out = {}
    for name, field in model.model_fields.items():
        value = field.get_default(call_default_factory=True)
        if value is not None:
            out[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    return out


def secret_names(model: type[BaseSettings] = Settings) -> set[str]:
    """The variables that hold secrets (their values must never be logged)."""
    fields = model.model_fields.items()
    return {n for n, f in fields if SecretStr in (f.annotation, *get_args(f.annotation))}


_MESSAGES = {
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "timedelta_parsing": "must be a duration such as 7d, 36h or 3600",
}


def _describe(exc: ValidationError, model: type[BaseSettings]) -> str:
    """'NAME must be ..., not <value>' per problem; secret values are never repeated."""
    secrets = secret_names(model)
    problems = []
    for err in exc.errors(include_url=False):
        name = str(err["loc"][0]) if err["loc"] else ""
        if not name:  # a model validator (ConfigError) already names its variables
            problems.append(str(err.get("ctx", {}).get("error") or err["msg"]))
            continue
        text = _MESSAGES.get(err["type"]) or _bounds(model, name) or _msg(err["msg"])
        shown = "" if name in secrets or not isinstance(err["input"], str) else err["input"]
        problems.append(f"{name} {text}" + (f", not {shown!r}" if shown else ""))
    return "; ".join(problems)


def _bounds(model: type[BaseSettings], name: str) -> str | None:
    field = model.model_fields.get(name)
    if field is None:
        return None
    low = next((m.ge for m in field.metadata if getattr(m, "ge", None) is not None), None)
    high = next((m.le for m in field.metadata if getattr(m, "le", None) is not None), None)
    if low is not None and high is not None:
        return f"must be between {low:g} and {high:g}"
    return f"must be at least {low:g}" if low is not None else None


def _msg(message: str) -> str:
    message = message.removeprefix("Value error, ")
    return (
        "must be " + message.removeprefix("Input should be ") if "should be" in message else message
    )


# --- wiring into the app --------------------------------------------------------------------


def read_environment(root: Path) -> dict[str, str]:
    """The environment, then `.env` at the project root, then instance/dev.env (`make run`'s).

    The environment wins over both files, `.env` over dev.env. DEV_ENV_FILE names another
    dev file (relative to the project root), or none when blank.
    """
    from dotenv import dotenv_values

    found: dict[str, str] = {}
    dev_file = os.environ.get("DEV_ENV_FILE", DEV_ENV_FILE).strip()
    for path in ([root / dev_file] if dev_file else []) + [root / ".env"]:
        if path.is_file():
            found.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    return found | dict(os.environ)


def configure(app: Flask, environ: Mapping[str, str] | None) -> None:
    """Load the service's settings into app.config (environ None: the test config did)."""
    app.config.update(defaults(Settings))
    if environ is not None:
        app.extensions[_EXT_ENVIRON] = dict(environ)
        app.config.update(as_config(load_settings(environ, Settings)))


def register_settings(app: Flask, model: type[BaseSettings]) -> None:
    """Add a package's own settings: defaults always, the environment's values when read.

    A test config's entries win over the defaults.

    Raises:
        ConfigError: a variable of the model is set to something unusable.
    """
    for name, value in defaults(model).items():
        app.config.setdefault(name, value)
    environ = app.extensions.get(_EXT_ENVIRON)
    if environ is not None:
        app.config.update(as_config(load_settings(environ, model)))


def default_database_url(instance_path: str) -> str:
    """The SQLite file under the instance folder used when DATABASE_URL is unset."""
    os.makedirs(instance_path, exist_ok=True)
    return f"sqlite:///{Path(instance_path) / 'prebookings.db'}"


#: Flask's own settings that no environment variable sets.
FLASK_DEFAULTS: dict[str, Any] = {
    # Bodies larger than this are refused with 413 before they are parsed.
    "MAX_CONTENT_LENGTH": 64 * 1024,
    # The admin page's session cookie (/admin/login): never readable by scripts, never sent
    # cross-site, only over https. Browsers treat http://127.0.0.1 and localhost as secure
    # contexts and keep Secure cookies there, so `make run` works over plain http.
    "SESSION_COOKIE_NAME": "admin_session",
    "SESSION_COOKIE_SECURE": True,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Strict",
    "PERMANENT_SESSION_LIFETIME": timedelta(hours=8),
    "WTF_CSRF_TIME_LIMIT": 8 * 3600,
    # CSRF is checked where a cookie authenticates (the admin blueprint), not on bearer APIs.
    "WTF_CSRF_CHECK_DEFAULT": False,
}
