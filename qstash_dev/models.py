"""The objects the server keeps, and how each is shown on the wire (keys as the SDKs read them)."""

from __future__ import annotations

import base64
import hashlib
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

JSON = dict[str, Any]

FINAL_STATES = frozenset({"DELIVERED", "FAILED", "CANCELED"})


@dataclass
class MessageSpec:
    """What to deliver and how: everything a publish request (or schedule) configures."""

    url: str
    method: str = "POST"
    body_b64: str = ""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retries: int = 3
    retry_delay: str | None = None
    timeout_s: float | None = None
    delay_s: float = 0.0
    callback: str | None = None
    failure_callback: str | None = None
    callback_headers: dict[str, str] = field(default_factory=dict)
    failure_callback_headers: dict[str, str] = field(default_factory=dict)
    callback_opts: dict[str, str] = field(default_factory=dict)
    failure_callback_opts: dict[str, str] = field(default_factory=dict)
    topic_name: str | None = None
    endpoint_name: str | None = None
    queue_name: str | None = None
    schedule_id: str | None = None
    caller_ip: str = "127.0.0.1"
    flow_key: str | None = None
    flow_parallelism: int = 0
    flow_rate: int = 0
    flow_period_s: int = 1
    labels: list[str] = field(default_factory=list)
    redact: list[str] = field(default_factory=list)
    is_callback: bool = False

    @property
    def body(self) -> bytes:
        """The raw body bytes."""
        return base64.b64decode(self.body_b64)

    @staticmethod
    def from_json(data: JSON) -> MessageSpec:
        """Rebuild from `asdict` output."""
        return MessageSpec(**data)


@dataclass
class Message:
    """One message and where it is in its life."""

    id: str
    spec: MessageSpec
    created_ms: int
    not_before_ms: int
    state: str = "CREATED"
    retried: int = 0
    due_ms: int = 0
    in_queue: bool = False
    queue_seq: int = 0
    finished_ms: int | None = None
    version: int = 0

    def to_json(self) -> JSON:
        """Serialise for storage."""
        return asdict(self)

    @staticmethod
    def from_json(data: JSON) -> Message:
        """Rebuild from storage."""
        spec = MessageSpec.from_json(data.pop("spec"))
        return Message(spec=spec, **data)


@dataclass
class Schedule:
    """A cron schedule that produces messages from one spec."""

    id: str
    cron: str
    destination: str
    spec: MessageSpec
    created_ms: int
    paused: bool = False
    last_ms: int | None = None
    next_ms: int | None = None
    last_states: dict[str, str] = field(default_factory=dict)
    version: int = 0

    def to_json(self) -> JSON:
        """Serialise for storage."""
        return asdict(self)

    @staticmethod
    def from_json(data: JSON) -> Schedule:
        """Rebuild from storage."""
        spec = MessageSpec.from_json(data.pop("spec"))
        return Schedule(spec=spec, **data)


@dataclass
class DlqEntry:
    """A message whose deliveries were exhausted, with the last response."""

    dlq_id: str
    message: JSON
    spec: MessageSpec
    response_status: int
    response_headers: dict[str, list[str]]
    response_body_b64: str
    created_ms: int

    def to_json(self) -> JSON:
        """Serialise for storage."""
        return asdict(self)

    @staticmethod
    def from_json(data: JSON) -> DlqEntry:
        """Rebuild from storage."""
        spec = MessageSpec.from_json(data.pop("spec"))
        return DlqEntry(spec=spec, **data)


@dataclass
class Queue:
    """A FIFO queue: `parallelism` messages in flight (including their retries)."""

    name: str
    parallelism: int
    created_ms: int
    updated_ms: int
    paused: bool = False
    waiting: deque[str] = field(default_factory=deque)
    active: set[str] = field(default_factory=set)

    def to_json(self) -> JSON:
        """Serialise the settings (membership is rebuilt from messages)."""
        return {
            "name": self.name,
            "parallelism": self.parallelism,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "paused": self.paused,
        }


@dataclass
class UrlGroup:
    """A URL group (a "topic" in the API): publishing fans out to every endpoint."""

    name: str
    created_ms: int
    updated_ms: int
    endpoints: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> JSON:
        """Serialise for storage."""
        return asdict(self)


@dataclass
class FlowState:
    """Runtime state of one flow-control key."""

    key: str
    parallelism: int = 0
    rate: int = 0
    period_s: int = 1
    in_flight: int = 0
    window_start_ms: int = 0
    window_count: int = 0
    paused: bool = False
    pinned_parallelism: bool = False
    pinned_rate: bool = False
    waiting: deque[str] = field(default_factory=deque)
    timer_armed: bool = False


def header_lists(headers: dict[str, str]) -> dict[str, list[str]]:
    """`{Name: value}` as the API's `{Name: [value]}`."""
    return {k: [v] for k, v in headers.items()}


def redacted(value: bytes) -> str:
    """How a redacted value is shown."""
    return "REDACTED:" + hashlib.sha256(value).hexdigest()


def body_fields(body: bytes, key: str = "body") -> JSON:
    """`body` as text when UTF-8, else `bodyBase64`."""
    if not body:
        return {}
    try:
        return {key: body.decode("utf-8")}
    except UnicodeDecodeError:
        return {key + "Base64": base64.b64encode(body).decode()}


def shown_headers(spec: MessageSpec) -> dict[str, list[str]]:
    """Forwarded headers with redaction applied."""
    redact = {r.lower() for r in spec.redact}
    everything = "header" in redact or "headers" in redact
    shown: dict[str, list[str]] = {}
    for name, value in spec.headers.items():
        hidden = everything or f"header[{name.lower()}]" in redact
        shown[name] = [redacted(value.encode()) if hidden else value]
    if spec.content_type:
        shown.setdefault("Content-Type", [spec.content_type])
    return shown


def is_body_redacted(spec: MessageSpec) -> bool:
    """Whether API responses must hide the body."""
    return "body" in {r.lower() for r in spec.redact} and bool(spec.body_b64)


def spec_fields(spec: MessageSpec) -> JSON:
    """The API keys every message-like object shares."""
    out: JSON = {"method": spec.method, "header": shown_headers(spec), "callerIP": spec.caller_ip}
    if is_body_redacted(spec):
        out["body"] = redacted(spec.body)
    else:
        out.update(body_fields(spec.body))
    optional = {
        "callback": spec.callback,
        "failureCallback": spec.failure_callback,
        "retryDelayExpression": spec.retry_delay,
        "topicName": spec.topic_name,
        "endpointName": spec.endpoint_name,
        "queueName": spec.queue_name,
        "scheduleId": spec.schedule_id,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    if spec.callback_headers:
        out["callbackHeader"] = header_lists(spec.callback_headers)
    if spec.failure_callback_headers:
        out["failureCallbackHeader"] = header_lists(spec.failure_callback_headers)
    out.update(flow_fields(spec))
    if spec.labels:
        out["label"] = spec.labels[0]
        out["labels"] = list(spec.labels)
    if spec.timeout_s is not None:
        out["timeout"] = int(spec.timeout_s)
    return out


def flow_fields(spec: MessageSpec) -> JSON:
    """Flow-control keys; zero limits are omitted, `period` defaults to 1."""
    if spec.flow_key is None:
        return {}
    out: JSON = {"flowControlKey": spec.flow_key, "period": spec.flow_period_s}
    if spec.flow_parallelism:
        out["parallelism"] = spec.flow_parallelism
    if spec.flow_rate:
        out["rate"] = spec.flow_rate
    return out


def message_to_api(msg: Message) -> JSON:
    """A message as `GET /v2/messages/{id}` shows it."""
    out: JSON = {
        "messageId": msg.id,
        "url": msg.spec.url,
        "maxRetries": msg.spec.retries,
        "notBefore": msg.not_before_ms,
        "createdAt": msg.created_ms,
    }
    out.update(spec_fields(msg.spec))
    return out


def schedule_to_api(sched: Schedule) -> JSON:
    """A schedule as `GET /v2/schedules/{id}` shows it."""
    out: JSON = {
        "scheduleId": sched.id,
        "cron": sched.cron,
        "destination": sched.destination,
        "createdAt": sched.created_ms,
        "retries": sched.spec.retries,
        "isPaused": sched.paused,
        "lastScheduleStates": dict(sched.last_states),
    }
    out.update(spec_fields(sched.spec))
    if sched.spec.delay_s:
        out["delay"] = int(sched.spec.delay_s)
    if sched.last_ms is not None:
        out["lastScheduleTime"] = sched.last_ms
    if sched.next_ms is not None and not sched.paused:
        out["nextScheduleTime"] = sched.next_ms
    return out


def dlq_to_api(entry: DlqEntry) -> JSON:
    """A DLQ entry as `GET /v2/dlq/{id}` shows it."""
    out = dict(entry.message)
    out["dlqId"] = entry.dlq_id
    out["responseStatus"] = entry.response_status
    out["responseHeader"] = entry.response_headers
    out.update(body_fields(base64.b64decode(entry.response_body_b64), "responseBody"))
    return out


def queue_to_api(queue: Queue, lag: int) -> JSON:
    """A queue as `GET /v2/queues/{name}` shows it; `lag`: its messages not yet delivered."""
    return {
        "name": queue.name,
        "parallelism": queue.parallelism,
        "createdAt": queue.created_ms,
        "updatedAt": queue.updated_ms,
        "lag": lag,
        "paused": queue.paused,
    }


def group_to_api(group: UrlGroup) -> JSON:
    """A URL group as `GET /v2/topics/{name}` shows it."""
    return {
        "name": group.name,
        "createdAt": group.created_ms,
        "updatedAt": group.updated_ms,
        "endpoints": [dict(e) for e in group.endpoints],
    }


def flow_to_api(flow: FlowState, now_ms: int) -> JSON:
    """A flow-control key as `GET /v2/flowControl/{key}` shows it."""
    in_window = now_ms - flow.window_start_ms < flow.period_s * 1000
    return {
        "flowControlKey": flow.key,
        "waitListSize": len(flow.waiting),
        "parallelismMax": flow.parallelism,
        "parallelismCount": flow.in_flight,
        "rateMax": flow.rate,
        "rateCount": flow.window_count if in_window else 0,
        "ratePeriod": flow.period_s,
        "ratePeriodStart": flow.window_start_ms // 1000,
        "isPaused": flow.paused,
        "isPinnedParallelism": flow.pinned_parallelism,
        "isPinnedRate": flow.pinned_rate,
    }
