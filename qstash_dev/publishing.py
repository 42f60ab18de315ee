"""Turn a publish request (destination, headers, body) into a MessageSpec and its options."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from urllib.parse import unquote, unquote_plus

from qstash_dev import expr
from qstash_dev.errors import BadRequest
from qstash_dev.models import MessageSpec
from qstash_dev.parsing import (
    parse_bool,
    parse_duration_s,
    parse_flow_control,
    split_list,
)

_CALLBACK_OPTS = ("method", "timeout", "retries", "retry-delay", "delay")
_NOT_FORWARDED = {"authorization", "host", "content-length", "connection", "accept-encoding"}


@dataclass
class PublishRequest:
    """A parsed publish: the spec plus the options that only matter when it is accepted."""

    spec: MessageSpec
    not_before_ms: int | None = None
    dedup_id: str | None = None
    content_dedup: bool = False
    cron: str | None = None
    schedule_id: str | None = None


def canonical(name: str) -> str:
    """`test-header` -> `Test-Header`."""
    return "-".join(part.capitalize() for part in name.split("-"))


def split_destination(tail: str, raw_query: str) -> tuple[str, list[tuple[str, str]]]:
    """Destination from the raw path tail and query; `upstash-*` query keys become config.

    `qstash_token` is dropped; every other query item stays in the destination verbatim.
    """
    if tail.lower().startswith(("http%3a", "https%3a")):
        tail = unquote(tail)  # a client that percent-encoded the whole destination
    if tail.startswith(("http:/", "https:/")) and not tail.startswith(("http://", "https://")):
        scheme, _, rest = tail.partition(":/")
        tail = f"{scheme}://{rest}"
    kept: list[str] = []
    config: list[tuple[str, str]] = []
    for item in filter(None, raw_query.split("&")):
        key = unquote_plus(item.partition("=")[0]).lower()
        if key.startswith("upstash-"):
            config.append((key, unquote_plus(item.partition("=")[2])))
        elif key != "qstash_token":
            kept.append(item)
    return (f"{tail}?{'&'.join(kept)}" if kept else tail), config


def is_url(destination: str) -> bool:
    """URL destinations start with a scheme; anything else names a URL group."""
    return destination.startswith(("http://", "https://"))


def parse_publish(
    destination: str, headers: Iterable[tuple[str, str]], body: bytes, caller_ip: str
) -> PublishRequest:
    """Read every publish header the SDKs send.

    Raises:
        BadRequest: a header value is malformed.
    """
    items = [(k, v) for k, v in headers]
    lower = {k.lower(): v for k, v in items}
    spec = MessageSpec(
        url=destination, body_b64=base64.b64encode(body).decode(), caller_ip=caller_ip
    )
    _apply_basics(spec, lower)
    _apply_forwarded(spec, items, lower)
    _apply_callbacks(spec, items)
    _apply_flow(spec, lower)
    req = PublishRequest(spec=spec)
    _apply_timing(req, lower)
    req.dedup_id = lower.get("upstash-deduplication-id") or None
    req.content_dedup = parse_bool(lower.get("upstash-content-based-deduplication", "false"))
    req.cron = lower.get("upstash-cron")
    req.schedule_id = lower.get("upstash-schedule-id") or None
    return req


def _apply_basics(spec: MessageSpec, lower: dict[str, str]) -> None:
    """Method, content type, retries, retry delay, timeout, labels, redaction, queue."""
    spec.content_type = lower.get("content-type") or None
    spec.method = lower.get("upstash-method", "POST").upper() or "POST"
    if spec.method not in {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}:
        raise BadRequest(f"invalid method: {spec.method}")
    if "upstash-retries" in lower:
        spec.retries = _int(lower["upstash-retries"], "Upstash-Retries")
    if lower.get("upstash-retry-delay"):
        expr.compile_expression(lower["upstash-retry-delay"])
        spec.retry_delay = lower["upstash-retry-delay"]
    if lower.get("upstash-timeout"):
        spec.timeout_s = parse_duration_s(lower["upstash-timeout"])
    spec.labels = split_list(lower.get("upstash-label", ""))
    spec.redact = split_list(lower.get("upstash-redact-fields", ""))
    spec.queue_name = lower.get("upstash-queue-name") or None


def _apply_forwarded(
    spec: MessageSpec, items: list[tuple[str, str]], lower: dict[str, str]
) -> None:
    """`Upstash-Forward-X` (and with `Upstash-Header-Forward`, every plain header)."""
    forward_all = parse_bool(lower.get("upstash-header-forward", "false"))
    for name, value in items:
        low = name.lower()
        if low.startswith("upstash-forward-"):
            spec.headers[canonical(low[len("upstash-forward-") :])] = value
        elif forward_all and not low.startswith("upstash-") and low not in _NOT_FORWARDED:
            spec.headers.setdefault(canonical(low), value)
    if "Content-Type" in spec.headers and spec.content_type is None:
        spec.content_type = spec.headers.pop("Content-Type")


def _apply_callbacks(spec: MessageSpec, items: list[tuple[str, str]]) -> None:
    """Callback URLs, their options and the headers they carry."""
    for name, value in items:
        low = name.lower()
        if low == "upstash-callback":
            spec.callback = value
        elif low == "upstash-failure-callback":
            spec.failure_callback = value
        elif low.startswith("upstash-callback-"):
            _callback_item(
                low[len("upstash-callback-") :], value, spec.callback_headers, spec.callback_opts
            )
        elif low.startswith("upstash-failure-callback-"):
            rest = low[len("upstash-failure-callback-") :]
            _callback_item(rest, value, spec.failure_callback_headers, spec.failure_callback_opts)


def _callback_item(rest: str, value: str, headers: dict[str, str], opts: dict[str, str]) -> None:
    """One `...-Callback-<rest>` header: an option, a forwarded header, or a bare one."""
    if rest in _CALLBACK_OPTS:
        opts[rest] = value
    elif rest.startswith("forward-"):
        headers[canonical(rest[len("forward-") :])] = value
    else:
        headers[canonical(rest)] = value  # qstash-py sends callback_headers without "Forward-"


def _apply_flow(spec: MessageSpec, lower: dict[str, str]) -> None:
    """`Upstash-Flow-Control-Key` / `-Value`."""
    key = lower.get("upstash-flow-control-key")
    if not key:
        return
    limits = parse_flow_control(lower.get("upstash-flow-control-value", ""))
    spec.flow_key = key
    spec.flow_parallelism, spec.flow_rate = limits.parallelism, limits.rate
    spec.flow_period_s = limits.period_s


def _apply_timing(req: PublishRequest, lower: dict[str, str]) -> None:
    """`Upstash-Not-Before` (unix s) wins over `Upstash-Delay`."""
    if lower.get("upstash-delay"):
        req.spec.delay_s = parse_duration_s(lower["upstash-delay"])
    if lower.get("upstash-not-before"):
        req.not_before_ms = _int(lower["upstash-not-before"], "Upstash-Not-Before") * 1000


def due_ms(req: PublishRequest, now_ms: int) -> int:
    """When the first attempt is due."""
    if req.not_before_ms is not None:
        return req.not_before_ms
    return now_ms + int(req.spec.delay_s * 1000)


def content_key(destination: str, spec: MessageSpec) -> str:
    """Content-based dedup key: destination, body, content type and forwarded headers."""
    digest = hashlib.sha256()
    for part in (destination, spec.body_b64, spec.content_type or ""):
        digest.update(part.encode() + b"\0")
    for name in sorted(spec.headers):
        digest.update(f"{name}:{spec.headers[name]}\0".encode())
    return "content:" + digest.hexdigest()


def for_endpoint(spec: MessageSpec, group: str, endpoint: dict[str, str]) -> MessageSpec:
    """A copy of the spec addressed to one endpoint of a URL group."""
    return replace(
        spec,
        url=endpoint["url"],
        topic_name=group,
        endpoint_name=endpoint.get("name") or None,
        headers=dict(spec.headers),
    )


def _int(text: str, what: str) -> int:
    """Parse an integer header.

    Raises:
        BadRequest: not an integer.
    """
    try:
        return int(text.strip())
    except ValueError as exc:
        raise BadRequest(f"invalid {what}: {text!r}") from exc


def now_ms() -> int:
    """Now as unix milliseconds."""
    return time.time_ns() // 1_000_000
