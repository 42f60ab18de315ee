"""Filters of the list and bulk endpoints: which keys each one takes, and what a record matches.

A key an endpoint does not know is a 400 that names it, never ignored: an ignored key would
turn "delete the entries labelled x" into "delete everything" (qstash-js's DLQ test sends a
misspelt `labeel` and expects an error). Values follow the API docs: a key may repeat or hold a
comma-joined list (OR), and different keys AND together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from qstash_dev.errors import BadRequest

Params = dict[str, list[str]]

_SHARED = frozenset(
    {"url", "topicName", "queueName", "scheduleId", "label", "flowControlKey", "callerIp"}
)
_DATES = frozenset({"fromDate", "toDate"})
_INTEGERS = _DATES | {"responseStatus"}
# Query key -> the record key it compares with (the rest compare with the same name).
_FIELD = {"callerIP": "callerIp", "messageIds": "messageId", "dlqIds": "dlqId"}
_STATES = {
    "CREATED": ("CREATED",),
    "ACTIVE": ("ACTIVE",),
    "RETRY": ("RETRY",),
    "ERROR": ("ERROR",),
    "DELIVERED": ("DELIVERED",),
    "FAILED": ("FAILED",),
    "CANCEL_REQUESTED": ("CANCEL_REQUESTED",),
    "CANCELED": ("CANCELED",),
    "CANCELLED": ("CANCELED",),  # the docs' spelling; the log itself says CANCELED
    "IN_PROGRESS": ("ACTIVE", "RETRY", "ERROR"),
}
_DESTINATION = frozenset({"host", "path"})
# qstash-js documents host/path as taken by message cancel and the logs, and refused by the DLQ.
_NO_DESTINATION = "host and path filters are taken by message cancel and the logs, not the DLQ"


@dataclass(frozen=True)
class Accepts:
    """The filter keys one endpoint takes (its control keys, like `count`, are popped first)."""

    endpoint: str
    keys: frozenset[str]
    refused: Mapping[str, str] = field(default_factory=dict)  # known elsewhere: key -> why not


MESSAGES = Accepts("DELETE /v2/messages", _SHARED | _DATES | _DESTINATION | {"callerIP"})
DLQ_LIST = Accepts(
    "GET /v2/dlq",
    _SHARED | _DATES | {"messageId", "responseStatus", "dlqIds"},
    dict.fromkeys(_DESTINATION, _NO_DESTINATION),
)
DLQ_BULK = Accepts(
    "/v2/dlq",
    _SHARED | _DATES | {"messageId", "responseStatus"},
    dict.fromkeys(_DESTINATION, _NO_DESTINATION),
)
EVENTS = Accepts(
    "GET /v2/events", _SHARED | _DATES | _DESTINATION | {"messageId", "messageIds", "state"}
)


@dataclass(frozen=True)
class Filter:
    """Parsed filters: every key must match (AND), any of one key's values will do (OR)."""

    wanted: Mapping[str, frozenset[str]] = field(default_factory=dict)
    from_ms: int | None = None
    to_ms: int | None = None

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether an API-shaped record (message, DLQ entry or log entry) passes."""
        for key, wanted in self.wanted.items():
            if wanted.isdisjoint(_values(record, key)):
                return False
        created = int(record.get("createdAt") or record.get("time") or 0)
        if self.from_ms is not None and created < self.from_ms:
            return False
        return self.to_ms is None or created <= self.to_ms


@dataclass(frozen=True)
class DlqPage:
    """Which DLQ entries a bulk delete or retry takes: `count` of those `filt` matches."""

    filt: Filter
    cursor: str | None = None
    count: int = 100


def parse(params: Params, accepts: Accepts) -> Filter:
    """The filter that `params` (query keys and JSON body keys) ask `accepts.endpoint` for.

    Raises:
        BadRequest: a key the endpoint does not take, an empty value, or a malformed one.
    """
    wanted: dict[str, frozenset[str]] = {}
    dates: dict[str, int] = {}
    for key, raw in params.items():
        _check_key(key, accepts)
        values = _candidates(key, raw)
        if key in _DATES:
            if len(values) != 1:
                raise BadRequest(f"filter {key!r} takes one value (unix milliseconds)")
            dates[key] = int(values.pop())
            continue
        name = _FIELD.get(key, key)
        wanted[name] = wanted.get(name, frozenset()) | _expand(key, values)
    return Filter(wanted, dates.get("fromDate"), dates.get("toDate"))


def _check_key(key: str, accepts: Accepts) -> None:
    """Refuse a key the endpoint does not take, saying why when it is known elsewhere.

    Raises:
        BadRequest: the endpoint does not take `key`.
    """
    if key in accepts.refused:
        why = accepts.refused[key]
        raise BadRequest(f"filter {key!r} is not supported on {accepts.endpoint}: {why}")
    if key not in accepts.keys:
        known = ", ".join(sorted(accepts.keys))
        raise BadRequest(f"unknown filter {key!r} on {accepts.endpoint} (known: {known})")


def _candidates(key: str, raw: list[str]) -> set[str]:
    """Every value given for `key`: each repeat, and the parts of a comma-joined one.

    Raises:
        BadRequest: no value at all, or a non-integer where an integer is due.
    """
    parts = {p.strip() for item in raw for p in item.split(",") if p.strip()}
    if not parts:
        raise BadRequest(f"filter {key!r} has no value")
    if key in _INTEGERS and not all(p.lstrip("-").isdigit() for p in parts):
        raise BadRequest(f"filter {key!r} must be an integer, got {', '.join(sorted(raw))}")
    if key == "url":  # a URL may itself hold a comma, so the whole value stays a candidate
        parts |= {item for item in raw if item}
    return parts


def _expand(key: str, values: Iterable[str]) -> frozenset[str]:
    """Values as the records hold them: state aliases to logged states, hosts in lower case.

    Raises:
        BadRequest: an unknown state.
    """
    if key == "host":  # host names are case-insensitive
        return frozenset(v.lower() for v in values)
    if key != "state":
        return frozenset(values)
    out: set[str] = set()
    for value in values:
        if value not in _STATES:
            raise BadRequest(f"unknown state {value!r} (known: {', '.join(_STATES)})")
        out.update(_STATES[value])
    return frozenset(out)


def _values(record: Mapping[str, Any], key: str) -> set[str]:
    """What a record holds for a filter key, as strings."""
    if key == "label":
        labels = record.get("labels") or [record.get("label")]
        return {str(label) for label in labels if label is not None}
    if key in _DESTINATION:
        parts = urlsplit(str(record.get("url") or ""))
        if key == "path":
            return {parts.path or "/"}
        host_port = parts.netloc.rpartition("@")[2].lower()  # no user:password@
        return {host_port, parts.hostname or ""}  # with or without the port
    if key == "callerIp":
        value = record.get("callerIp", record.get("callerIP"))
    else:
        value = record.get(key)
    return set() if value is None else {str(value)}
