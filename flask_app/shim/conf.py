"""Settings (`app.conf`): Celery's names and defaults, and the ones the shim refuses."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask_app.shim.exceptions import UnsupportedOption

# QStash's maximum delay on the free plan; raise QSTASH_MAX_DELAY_S on pay-as-you-go (1 year).
MAX_DELAY_S = 7 * 24 * 3600

DEFAULTS: dict[str, Any] = {
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_store_eager_result": False,
    "task_ignore_result": False,
    "task_track_started": False,
    "task_acks_late": False,
    "task_time_limit": None,
    "task_soft_time_limit": None,
    "task_default_rate_limit": None,
    "task_default_queue": "celery",
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": None,
    "result_expires": timedelta(days=1),
    "timezone": None,
    "enable_utc": True,
    "beat_schedule": {},
    "imports": (),
    "include": (),
    "task_publish_retry": True,
    "broker_url": None,
    "result_backend": None,
    "qstash_max_delay_s": MAX_DELAY_S,
    # How long a delivery holds a task run before another delivery may take it over; the
    # running delivery renews it every third of this, so only a crashed run lets it lapse.
    "task_lease_seconds": 60,
}
_REFUSED_SETTINGS = {
    "task_routes": "routing to queues is not supported",
    "task_soft_time_limit": "soft time limits are not supported",
}


class Conf(dict[str, Any]):
    """Settings mapping with attribute access (`app.conf.task_always_eager`)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        check_setting(key, value)
        super().__setitem__(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """dict.update with the setting checks."""
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


def check_setting(key: str, value: Any) -> None:
    """Refuse a setting the shim cannot honour.

    Raises:
        UnsupportedOption
    """
    if key in _REFUSED_SETTINGS and value:
        raise UnsupportedOption(f"setting {key}={value!r}: {_REFUSED_SETTINGS[key]}")
    if key in ("task_serializer", "result_serializer") and value != "json":
        raise UnsupportedOption(f"setting {key}={value!r}: only json is supported")
    if key in ("accept_content", "result_accept_content") and value:
        if set(value) - {"json", "application/json"}:
            raise UnsupportedOption(f"setting {key}={value!r}: only json is supported")
    if key == "task_default_rate_limit" and value is not None:
        from_rate_limit(value, "task_default_rate_limit")


def from_rate_limit(value: Any, where: str) -> tuple[int, int]:
    """Celery's rate ("10/m", "100/s", "1/h", or a number per second) as (rate, period_s).

    Raises:
        UnsupportedOption: not Celery's form, or a count that is not a positive whole number
            (QStash counts whole deliveries per period).
    """
    text = str(value).strip()
    count, _, unit = text.partition("/")
    period_s = {"": 1, "s": 1, "m": 60, "h": 3600}.get(unit.strip())
    try:
        number = float(count)
    except ValueError:
        number = 0.0
    if period_s is None or number <= 0 or not number.is_integer():
        raise UnsupportedOption(
            f"{where}: rate_limit={value!r} is not supported: use a whole number of tasks per "
            "second, minute or hour (e.g. '10/m'), which becomes QStash flow control"
        )
    return int(number), period_s
