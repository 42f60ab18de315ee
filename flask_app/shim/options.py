"""Celery options the shim refuses (T3), checked when the decorator or the call sees them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask_app.shim.exceptions import UnsupportedOption

# Options the shim cannot honour over QStash: rejected when the decorator or call sees them.
T3_TASK_OPTIONS = {
    "soft_time_limit": "soft time limits have no safe equivalent under WSGI",
    "priority": "QStash has no message priorities",
    "reject_on_worker_lost": "QStash redelivers on timeout or 5xx regardless",
}
T3_CALL_OPTIONS = T3_TASK_OPTIONS | {
    "replaced_task_nesting": "task replacement is not supported",
}


def check_option(key: str, value: Any, table: Mapping[str, str], where: str) -> None:
    """Refuse a T3 option with a set value.

    Raises:
        UnsupportedOption
    """
    if key in table and value not in (None, False):
        raise UnsupportedOption(f"{where}: {key}={value!r} is not supported: {table[key]}")
    if key == "pydantic" and value:
        raise UnsupportedOption(f"{where}: pydantic=True is not supported by the shim")
    if key in ("serializer", "task_serializer") and value not in (None, "json"):
        raise UnsupportedOption(f"{where}: only the json serializer is supported, not {value!r}")
