"""Cron evaluation with croniter: 5 fields in UTC, an optional `CRON_TZ=Area/City ` prefix.

A sixth field is read as seconds (croniter's convention); real QStash has minute resolution,
so that is a local extension that lets tests see a schedule fire within a second.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # type: ignore[import-untyped]

from qstash_dev.errors import BadRequest


def split_timezone(expression: str) -> tuple[ZoneInfo | None, str]:
    """Separate a `CRON_TZ=` / `TZ=` prefix from the cron fields.

    Raises:
        BadRequest: the timezone is unknown.
    """
    text = expression.strip()
    head, _, rest = text.partition(" ")
    for prefix in ("CRON_TZ=", "TZ="):
        if head.startswith(prefix):
            try:
                return ZoneInfo(head[len(prefix) :]), rest.strip()
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise BadRequest(f"unknown timezone in cron: {head!r}") from exc
    return None, text


def validate(expression: str) -> None:
    """Check a cron expression.

    Raises:
        BadRequest: it cannot be parsed.
    """
    _, fields = split_timezone(expression)
    if not croniter.is_valid(fields):
        raise BadRequest(f"invalid cron expression: {expression!r}")


def next_fire_ms(expression: str, after_ms: int) -> int:
    """The first time strictly after `after_ms` (unix ms) at which the expression fires."""
    zone, fields = split_timezone(expression)
    start = datetime.fromtimestamp(after_ms / 1000, tz=zone or UTC)
    nxt: datetime = croniter(fields, start).get_next(datetime)
    return int(nxt.timestamp() * 1000)
