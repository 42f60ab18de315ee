"""Pure parsers for the header formats QStash accepts (durations, booleans, flow control)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from qstash_dev.errors import BadRequest

_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_duration_s(text: str) -> float:
    """Parse `30`, `10s`, `1d10h30m` or `500ms` into seconds.

    Raises:
        BadRequest: the text is not a duration.
    """
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return float(text)
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise BadRequest(f"invalid duration: {text!r}")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def parse_bool(text: str) -> bool:
    """Parse a boolean the way Go's strconv.ParseBool does (qstash-py sends `True`/`False`).

    Raises:
        BadRequest: the text is not a boolean.
    """
    value = text.strip()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"invalid boolean: {text!r}")


@dataclass(frozen=True)
class FlowLimits:
    """Flow-control limits from `Upstash-Flow-Control-Value` (0 = unlimited)."""

    parallelism: int = 0
    rate: int = 0
    period_s: int = 1


def parse_flow_control(text: str) -> FlowLimits:
    """Parse `parallelism=2, rate=10, period=1m` (any subset, any spacing).

    Raises:
        BadRequest: an item is not `key=value` or the key is unknown.
    """
    values = {"parallelism": 0, "rate": 0, "period": 1}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in values:
            raise BadRequest(f"invalid flow control item: {item!r}")
        number = parse_duration_s(raw) if key == "period" else float(raw.strip())
        values[key] = int(number)
    return FlowLimits(values["parallelism"], values["rate"], max(1, values["period"]))


def parse_retry_after_s(text: str, now_s: float) -> float | None:
    """Read `Retry-After`-style values: seconds, an HTTP date, or a Go duration (`6m5s`)."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        return max(0.0, parse_duration_s(text))
    except BadRequest:
        pass
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - now_s)
    except (TypeError, ValueError):
        return None


def split_list(text: str) -> list[str]:
    """Split a comma-joined header value, dropping blanks."""
    return [p.strip() for p in text.split(",") if p.strip()]
