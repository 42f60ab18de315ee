"""The broker: messages, retries, queues, flow control, schedules, DLQ and the event log.

All state lives here behind one lock. The Timer thread and the Sender loop call in with due
payloads and delivery outcomes; both get back attempts to start, which are submitted outside
the lock so that no request waits on another.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import string
import threading
from collections import deque
from dataclasses import replace
from typing import Any

from qstash_dev import cron, expr, publishing, signing
from qstash_dev.errors import BadRequest, NotFound, QStashDevError
from qstash_dev.filters import DlqPage, Filter
from qstash_dev.models import (
    FINAL_STATES,
    JSON,
    DlqEntry,
    FlowState,
    Message,
    MessageSpec,
    Queue,
    Schedule,
    UrlGroup,
    dlq_to_api,
    flow_to_api,
    group_to_api,
    is_body_redacted,
    message_to_api,
    queue_to_api,
    redacted,
    schedule_to_api,
    shown_headers,
)
from qstash_dev.parsing import parse_duration_s, parse_retry_after_s
from qstash_dev.publishing import PublishRequest, is_url, now_ms
from qstash_dev.sender import DEFAULT_TIMEOUT_S, Attempt, Outcome, Sender
from qstash_dev.store import Store
from qstash_dev.timer import Payload, Timer

_ALPHABET = string.ascii_letters + string.digits
DEDUP_WINDOW_MS = 10 * 60 * 1000
KEEP_FINISHED_MS = 10 * 60 * 1000
DEDUP_SWEEP_SIZE = 10_000  # expired dedup keys are swept once there are this many
MAX_EVENTS = 50_000
MAX_BACKOFF_S = 86400.0
LEAD_MS = 500  # attempts are prepared (signed, connected) this long before they are due
RETRY_AFTER_HEADERS = (
    "Retry-After",
    "X-Ratelimit-Reset",
    "X-Ratelimit-Reset-Requests",
    "X-Ratelimit-Reset-Tokens",
)


def new_id(prefix: str) -> str:
    """A random id like the real ones (`msg_...`, `scd_...`)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(24))


class Broker:
    """Owns the server state and the delivery machinery."""

    def __init__(
        self,
        *,
        current_key: str,
        next_key: str,
        store: Store | None = None,
        retry_delay_scale: float = 1.0,
        clock_offset_s: float = 0.0,
    ) -> None:
        """Create a stopped broker; `start()` loads persisted state and begins delivering.

        clock_offset_s: how far this server's clock runs ahead (negative: behind) of the real
        one, as seen in the iat/nbf/exp of the signatures (to test receivers' clock skew).
        """
        self.current_key, self.next_key = current_key, next_key
        self.retry_delay_scale = retry_delay_scale
        self.clock_offset_s = clock_offset_s
        self._store = store or Store()
        self._lock = threading.RLock()
        self._messages: dict[str, Message] = {}
        self._finished: deque[tuple[int, str]] = deque()
        self._dedup: dict[str, tuple[int, Any]] = {}
        self._schedules: dict[str, Schedule] = {}
        self._dlq: dict[str, DlqEntry] = {}
        self._queues: dict[str, Queue] = {}
        self._groups: dict[str, UrlGroup] = {}
        self._flows: dict[str, FlowState] = {}
        self._attempts: dict[str, Attempt] = {}
        self._events: deque[JSON] = deque(maxlen=MAX_EVENTS)
        self._seq = 0
        self._timer = Timer(self._on_due)
        self._sender = Sender(self._on_outcome)

    # ----- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Load state, start the sender and the timer."""
        self._sender.start()
        self._timer.start()
        with self._lock:
            self._load()

    def stop(self) -> None:
        """Stop delivering and close storage."""
        self._timer.stop()
        self._sender.stop()
        with self._lock:
            self._store.close()

    def _load(self) -> None:
        """Rebuild state from the store (a no-op in memory)."""
        for record in self._store.load("keys"):
            self.current_key, self.next_key = record["current"], record["next"]
        for record in self._store.load("group"):
            self._groups[record["name"]] = UrlGroup(**record)
        for record in self._store.load("queue"):
            self._queues[record["name"]] = Queue(**record)
        for record in self._store.load("dlq"):
            entry = DlqEntry.from_json(record)
            self._dlq[entry.dlq_id] = entry
        for record in self._store.load("event"):
            self._events.append(record)
            self._seq = max(self._seq, int(record.get("_seq", 0)))
        self._load_messages()
        for record in self._store.load("schedule"):
            sched = Schedule.from_json(record)
            self._schedules[sched.id] = sched
            self._arm_schedule(sched, now_ms())

    def _load_messages(self) -> None:
        """Pending messages are due again (an interrupted attempt is retried: at-least-once)."""
        records = sorted(
            self._store.load("message"), key=lambda r: (r["queue_seq"], r["created_ms"])
        )
        for record in records:
            msg = Message.from_json(record)
            msg.in_queue = False
            self._seq = max(self._seq, msg.queue_seq)
            self._messages[msg.id] = msg
            self._arm(msg, msg.due_ms)

    # ----- publishing ------------------------------------------------------------------------

    def publish(self, destination: str, req: PublishRequest) -> tuple[bool, JSON | list[JSON]]:
        """Accept a publish (URL or URL group); return (deduplicated, response body).

        Raises:
            NotFound: the URL group does not exist.
        """
        with self._lock:
            now = now_ms()
            self._purge(now)
            key = self._dedup_key(destination, req)
            if key is not None:
                hit = self._dedup_hit(key, now)
                if hit is not None:
                    return True, hit
            result = self._publish_new(destination, req, now)
            if key is not None:
                self._dedup[key] = (now + DEDUP_WINDOW_MS, result)
            return False, result

    def _publish_new(self, destination: str, req: PublishRequest, now: int) -> JSON | list[JSON]:
        """Create the message(s) for a publish."""
        due = publishing.due_ms(req, now)
        if is_url(destination):
            msg = self._create(req.spec, now, due)
            return {"messageId": msg.id, "url": destination, "deduplicated": False}
        group = self._groups.get(destination)
        if group is None or not group.endpoints:
            raise NotFound(f"url group {destination!r} not found")
        out: list[JSON] = []
        for endpoint in group.endpoints:
            spec = publishing.for_endpoint(req.spec, destination, endpoint)
            msg = self._create(spec, now, due)
            out.append({"messageId": msg.id, "url": spec.url, "deduplicated": False})
        return out

    def _dedup_key(self, destination: str, req: PublishRequest) -> str | None:
        """The deduplication key of a publish, if it asks for deduplication."""
        if req.dedup_id:
            return "id:" + req.dedup_id
        if req.content_dedup:
            return publishing.content_key(destination, req.spec)
        return None

    def _dedup_hit(self, key: str, now: int) -> JSON | list[JSON] | None:
        """The earlier response for a duplicate within the window, marked deduplicated."""
        found = self._dedup.get(key)
        if found is None or found[0] < now:
            self._dedup.pop(key, None)
            return None
        result = found[1]
        if isinstance(result, list):
            return [dict(item, deduplicated=True) for item in result]
        return dict(result, deduplicated=True)

    def _create(self, spec: MessageSpec, now: int, due: int) -> Message:
        """Store a new message, log it, arm its timer."""
        msg = Message(id=new_id("msg_"), spec=spec, created_ms=now, not_before_ms=due, due_ms=due)
        if spec.queue_name:
            self._queue(spec.queue_name, now)
            self._seq += 1
            msg.queue_seq = self._seq
        if spec.flow_key:
            self._flow_for(spec)  # the key is known (and its limits set) from publish on
        self._messages[msg.id] = msg
        self._save(msg)
        self._log(msg, "CREATED")
        self._arm(msg, due)
        return msg

    def _arm(self, msg: Message, due: int) -> None:
        """(Re)arm the message's timer; older timer entries become stale."""
        msg.version += 1
        msg.due_ms = due
        self._timer.at(due - LEAD_MS, ("msg", msg.id, msg.version))

    # ----- timer and outcomes ----------------------------------------------------------------

    def _on_due(self, payloads: list[Payload]) -> None:
        """Timer thread: start whatever became due."""
        attempts: list[Attempt] = []
        with self._lock:
            for kind, key, version in payloads:
                attempts.extend(self._handle_due(kind, key, version))
        self._sender.submit(attempts)

    def _handle_due(self, kind: str, key: str, version: int) -> list[Attempt]:
        """Dispatch one due payload."""
        if kind == "msg":
            msg = self._messages.get(key)
            if msg is None or msg.version != version or msg.state in FINAL_STATES:
                return []
            return self._due(msg)
        if kind == "sched":
            sched = self._schedules.get(key)
            if sched is not None and sched.version == version and not sched.paused:
                return self._fire_schedule(sched, scheduled=True)
            return []
        flow = self._flows.get(key)
        if flow is not None:
            flow.timer_armed = False
            return self._pump_flow(flow)
        return []

    def _due(self, msg: Message) -> list[Attempt]:
        """A message's time has come: join its queue, or try to start an attempt."""
        if msg.spec.queue_name and not msg.in_queue:
            queue = self._queue(msg.spec.queue_name, now_ms())
            msg.in_queue = True
            queue.waiting.append(msg.id)
            return self._pump_queue(queue)
        return self._try_start(msg)

    def _try_start(self, msg: Message) -> list[Attempt]:
        """Start an attempt unless flow control makes the message wait."""
        key = msg.spec.flow_key
        if key is None:
            return [self._attempt(msg)]
        flow = self._flow_for(msg.spec)
        if flow.waiting or not self._flow_room(flow):
            flow.waiting.append(msg.id)
            self._arm_flow(flow)
            return []
        self._flow_take(flow)
        return [self._attempt(msg)]

    def _attempt(self, msg: Message) -> Attempt:
        """Mark the message active and build its signed request."""
        msg.state = "ACTIVE"
        self._log(msg, "ACTIVE", time=max(now_ms(), msg.due_ms))  # prepared up to LEAD_MS early
        spec = msg.spec
        body = spec.body
        headers = dict(spec.headers)
        if spec.content_type:
            headers["Content-Type"] = spec.content_type
        headers.update(self._upstash_headers(msg))
        signed_at = now_ms() / 1000 + self.clock_offset_s
        headers["Upstash-Signature"] = signing.sign(self.current_key, spec.url, body, signed_at)
        timeout = spec.timeout_s or DEFAULT_TIMEOUT_S
        attempt = Attempt(
            msg.id, msg.version, spec.method, spec.url, headers, body, timeout, spec.flow_key
        )
        attempt.due_ms = msg.due_ms
        self._attempts[msg.id] = attempt
        return attempt

    def _upstash_headers(self, msg: Message) -> dict[str, str]:
        """The headers QStash adds to every delivery."""
        headers = {
            "Upstash-Message-Id": msg.id,
            "Upstash-Retried": str(msg.retried),
            "Upstash-Caller-Ip": msg.spec.caller_ip,
            "User-Agent": "Upstash-QStash",
        }
        if msg.spec.schedule_id:
            headers["Upstash-Schedule-Id"] = msg.spec.schedule_id
        if msg.spec.topic_name:
            headers["Upstash-Topic-Name"] = msg.spec.topic_name
        return headers

    def _on_outcome(self, attempt: Attempt, outcome: Outcome) -> None:
        """Sender loop: record the result and start whatever it unblocks."""
        with self._lock:
            attempts = self._release_flow(attempt.flow_key)
            if self._attempts.get(attempt.message_id) is attempt:
                del self._attempts[attempt.message_id]
            msg = self._messages.get(attempt.message_id)
            if msg is not None and msg.state not in FINAL_STATES:
                attempts.extend(self._settle(msg, outcome))
        self._sender.submit(attempts)

    def _settle(self, msg: Message, outcome: Outcome) -> list[Attempt]:
        """Delivered, retry, or failed into the DLQ."""
        now = now_ms()
        if 200 <= outcome.status < 300:
            self._callback(msg, outcome, "callback")
            return self._finish(msg, "DELIVERED", outcome)
        self._log(msg, "ERROR", **self._response_fields(outcome))
        non_retryable = (
            outcome.status == 489
            and (_header(outcome, "Upstash-Nonretryable-Error") or "").lower() == "true"
        )
        if non_retryable or msg.retried >= msg.spec.retries:
            self._callback(msg, outcome, "callback")
            return self._fail(msg, outcome, now)
        self._callback(msg, outcome, "callback")
        delay = self._retry_delay_ms(msg, outcome, now)
        msg.retried += 1
        msg.state = "RETRY"
        self._arm(msg, now + delay)
        self._save(msg)
        self._log(msg, "RETRY", nextDeliveryTime=now + delay, **self._response_fields(outcome))
        return []

    def _retry_delay_ms(self, msg: Message, outcome: Outcome, now: int) -> int:
        """Retry-After-style headers, else the message's expression, else QStash's backoff."""
        seconds: float | None = None
        for name in RETRY_AFTER_HEADERS:
            value = _header(outcome, name)
            if value is not None:
                seconds = parse_retry_after_s(value, now / 1000)
                if seconds is not None and seconds <= MAX_BACKOFF_S:
                    break
                seconds = None
        if seconds is not None:
            ms = seconds * 1000
        elif msg.spec.retry_delay:
            try:
                ms = expr.evaluate(msg.spec.retry_delay, msg.retried)
            except BadRequest:
                ms = _backoff_ms(msg.retried + 1)
        else:
            ms = _backoff_ms(msg.retried + 1)
        return int(ms * self.retry_delay_scale)

    def _fail(self, msg: Message, outcome: Outcome, now: int) -> list[Attempt]:
        """Retries exhausted: copy into the DLQ, fire the failure callback, finish."""
        self._seq += 1
        entry = DlqEntry(
            dlq_id=f"{now}-{self._seq}",
            message=message_to_api(msg),
            spec=msg.spec,
            response_status=outcome.status,
            response_headers=outcome.headers,
            response_body_b64=base64.b64encode(
                outcome.body or (outcome.error or "").encode()
            ).decode(),
            created_ms=now,
        )
        if not msg.spec.is_callback:
            self._dlq[entry.dlq_id] = entry
            self._store.put("dlq", entry.dlq_id, entry.to_json())
        self._callback(msg, outcome, "failure", entry.dlq_id)
        return self._finish(msg, "FAILED", outcome)

    def _finish(self, msg: Message, state: str, outcome: Outcome | None = None) -> list[Attempt]:
        """Final state: log, forget from storage, free the queue slot, note on the schedule."""
        now = now_ms()
        msg.state, msg.finished_ms = state, now
        extra = self._response_fields(outcome) if outcome is not None else {}
        self._log(msg, state, **extra)
        self._store.delete("message", msg.id)
        self._finished.append((now, msg.id))
        self._note_schedule(msg, state)
        if msg.spec.queue_name and msg.in_queue:
            queue = self._queues.get(msg.spec.queue_name)
            if queue is not None:
                queue.active.discard(msg.id)
                return self._pump_queue(queue)
        return []

    def _note_schedule(self, msg: Message, state: str) -> None:
        """Record the outcome in the schedule's `lastScheduleStates`."""
        sched = self._schedules.get(msg.spec.schedule_id or "")
        if sched is not None and msg.id in sched.last_states:
            sched.last_states[msg.id] = "SUCCESS" if state == "DELIVERED" else "FAIL"

    def _response_fields(self, outcome: Outcome | None) -> JSON:
        """Event-log keys describing a response."""
        if outcome is None:
            return {}
        out: JSON = {"responseStatus": outcome.status}
        if outcome.headers:
            out["responseHeader"] = outcome.headers
            out["responseHeaders"] = outcome.headers
        if outcome.body:
            out["responseBody"] = base64.b64encode(outcome.body).decode()
        if outcome.error:
            out["error"] = outcome.error
        elif not 200 <= outcome.status < 300:
            out["error"] = f"status {outcome.status}"
        return out

    # ----- callbacks -------------------------------------------------------------------------

    def _callback(
        self, msg: Message, outcome: Outcome, kind: str, dlq_id: str | None = None
    ) -> None:
        """Publish the callback (or failure callback) message for this outcome."""
        spec = msg.spec
        url = spec.callback if kind == "callback" else spec.failure_callback
        if not url or spec.is_callback:
            return
        opts = spec.callback_opts if kind == "callback" else spec.failure_callback_opts
        headers = spec.callback_headers if kind == "callback" else spec.failure_callback_headers
        body = self._callback_body(msg, outcome, dlq_id)
        cb = MessageSpec(
            url=url,
            method=opts.get("method", "POST").upper(),
            body_b64=base64.b64encode(json.dumps(body).encode()).decode(),
            content_type="application/json",
            headers=dict(headers),
            retries=int(opts.get("retries", spec.retries)),
            retry_delay=opts.get("retry-delay", spec.retry_delay),
            timeout_s=parse_duration_s(opts["timeout"]) if "timeout" in opts else spec.timeout_s,
            caller_ip=spec.caller_ip,
            is_callback=True,
        )
        now = now_ms()
        delay = int(parse_duration_s(opts["delay"]) * 1000) if "delay" in opts else 0
        self._create(cb, now, now + delay)

    def _callback_body(self, msg: Message, outcome: Outcome, dlq_id: str | None) -> JSON:
        """The JSON a callback receives (keys as in QStash's callbacks doc)."""
        spec = msg.spec
        body: JSON = {
            "status": outcome.status,
            "header": outcome.headers,
            "body": base64.b64encode(outcome.body).decode(),
            "retried": msg.retried,
            "maxRetries": spec.retries,
            "sourceMessageId": msg.id,
            "url": spec.url,
            "method": spec.method,
            "sourceHeader": {k: [v] for k, v in spec.headers.items()},
            "sourceBody": spec.body_b64,
            "notBefore": msg.not_before_ms,
            "createdAt": msg.created_ms,
            "callerIP": spec.caller_ip,
        }
        for key, value in (
            ("topicName", spec.topic_name),
            ("endpointName", spec.endpoint_name),
            ("scheduleId", spec.schedule_id),
            ("dlqId", dlq_id),
        ):
            if value is not None:
                body[key] = value
        return body

    # ----- queues ----------------------------------------------------------------------------

    def _queue(self, name: str, now: int) -> Queue:
        """The named queue, created with parallelism 1 on first use."""
        queue = self._queues.get(name)
        if queue is None:
            _check_name(name, "queue")
            queue = Queue(name=name, parallelism=1, created_ms=now, updated_ms=now)
            self._queues[name] = queue
            self._store.put("queue", name, queue.to_json())
        return queue

    def _pump_queue(self, queue: Queue) -> list[Attempt]:
        """Move waiting messages into free slots (FIFO)."""
        attempts: list[Attempt] = []
        while not queue.paused and queue.waiting and len(queue.active) < max(1, queue.parallelism):
            msg = self._messages.get(queue.waiting.popleft())
            if msg is None or msg.state in FINAL_STATES:
                continue
            queue.active.add(msg.id)
            attempts.extend(self._try_start(msg))
        return attempts

    # ----- flow control ----------------------------------------------------------------------

    def _flow_for(self, spec: MessageSpec) -> FlowState:
        """The flow state for the spec's key; limits follow the newest message unless pinned."""
        assert spec.flow_key is not None
        flow = self._flows.setdefault(spec.flow_key, FlowState(key=spec.flow_key))
        if not flow.pinned_parallelism:
            flow.parallelism = spec.flow_parallelism
        if not flow.pinned_rate:
            flow.rate, flow.period_s = spec.flow_rate, spec.flow_period_s
        return flow

    def _flow_room(self, flow: FlowState) -> bool:
        """Whether one more attempt may start now."""
        if flow.paused:
            return False
        if flow.parallelism and flow.in_flight >= flow.parallelism:
            return False
        now = now_ms()
        if now - flow.window_start_ms >= flow.period_s * 1000:
            flow.window_start_ms, flow.window_count = now, 0
        return not (flow.rate and flow.window_count >= flow.rate)

    def _flow_take(self, flow: FlowState) -> None:
        """Account for a started attempt."""
        flow.in_flight += 1
        flow.window_count += 1

    def _arm_flow(self, flow: FlowState) -> None:
        """Wake the wait list when the rate window ends."""
        if flow.rate and not flow.timer_armed and flow.window_count >= flow.rate:
            flow.timer_armed = True
            self._timer.at(flow.window_start_ms + flow.period_s * 1000, ("flow", flow.key, 0))

    def _release_flow(self, key: str | None) -> list[Attempt]:
        """An attempt ended: free its slot and start waiters."""
        flow = self._flows.get(key) if key else None
        if flow is None:
            return []
        flow.in_flight = max(0, flow.in_flight - 1)
        return self._pump_flow(flow)

    def _pump_flow(self, flow: FlowState) -> list[Attempt]:
        """Start waiting messages while the limits allow."""
        attempts: list[Attempt] = []
        while flow.waiting and self._flow_room(flow):
            msg = self._messages.get(flow.waiting.popleft())
            if msg is None or msg.state in FINAL_STATES:
                continue
            self._flow_take(flow)
            attempts.append(self._attempt(msg))
        self._arm_flow(flow)
        return attempts

    # ----- persistence and log ---------------------------------------------------------------

    def _save(self, msg: Message) -> None:
        """Persist a pending message."""
        self._store.put("message", msg.id, msg.to_json())

    def _log(self, msg: Message, state: str, **extra: Any) -> None:
        """Append an event-log entry."""
        spec = msg.spec
        self._seq += 1
        entry: JSON = {
            "_seq": self._seq,
            "time": now_ms(),
            "messageId": msg.id,
            "state": state,
            "url": spec.url,
            "method": spec.method,
            "maxRetries": spec.retries,
            "callerIp": spec.caller_ip,
        }
        optional = {
            "topicName": spec.topic_name,
            "endpointName": spec.endpoint_name,
            "queueName": spec.queue_name,
            "scheduleId": spec.schedule_id,
            "callback": spec.callback,
            "failureCallback": spec.failure_callback,
            "retryDelayExpr": spec.retry_delay,
            "retryDelayExpression": spec.retry_delay,
            "flowControlKey": spec.flow_key,
        }
        entry.update({k: v for k, v in optional.items() if v is not None})
        if spec.labels:
            entry["label"], entry["labels"] = spec.labels[0], list(spec.labels)
        if state == "CREATED":
            entry["header"] = shown_headers(spec)
            body = redacted(spec.body).encode() if is_body_redacted(spec) else spec.body
            entry["body"] = base64.b64encode(body).decode()
        entry.update(extra)
        self._events.append(entry)
        if type(self._store) is not Store:
            self._store.put("event", f"{self._seq:015d}", entry)

    def _purge(self, now: int) -> None:
        """Forget finished messages and dedup keys past their windows."""
        while self._finished and self._finished[0][0] + KEEP_FINISHED_MS < now:
            _, msg_id = self._finished.popleft()
            msg = self._messages.get(msg_id)
            if msg is not None and msg.state in FINAL_STATES:
                del self._messages[msg_id]
        if len(self._dedup) > DEDUP_SWEEP_SIZE:
            for key in [k for k, (exp, _) in self._dedup.items() if exp < now]:
                del self._dedup[key]

    # ----- messages API ----------------------------------------------------------------------

    def get_message(self, message_id: str) -> JSON:
        """A message that is pending, in flight or recently finished.

        Raises:
            NotFound: unknown or forgotten.
        """
        with self._lock:
            self._purge(now_ms())
            msg = self._messages.get(message_id)
            if msg is None or msg.state == "CANCELED":
                raise NotFound(f"message {message_id} not found")
            return message_to_api(msg)

    def cancel(self, message_id: str) -> None:
        """Cancel one pending message.

        Raises:
            NotFound: unknown or already finished.
        """
        with self._lock:
            msg = self._messages.get(message_id)
            if msg is None or msg.state in FINAL_STATES:
                raise NotFound(f"message {message_id} not found")
            attempts = self._cancel(msg)
        self._sender.submit(attempts)

    def cancel_many(self, ids: list[str] | None, filt: Filter, count: int | None = None) -> int:
        """Cancel the listed messages, or the pending ones `filt` matches (the oldest `count`)."""
        with self._lock:
            if ids is not None:  # an explicit, even empty, id list never means "everything"
                targets = [self._messages[i] for i in ids if i in self._messages]
                targets = [m for m in targets if m.state not in FINAL_STATES]
            else:
                pending = [m for m in self._messages.values() if m.state not in FINAL_STATES]
                targets = [m for m in pending if filt.matches(message_to_api(m))]
                targets = sorted(targets, key=lambda m: m.created_ms)[:count]
            attempts: list[Attempt] = []
            for msg in targets:
                attempts.extend(self._cancel(msg))
        self._sender.submit(attempts)
        return len(targets)

    def _cancel(self, msg: Message) -> list[Attempt]:
        """Log the cancellation and finish the message."""
        self._log(msg, "CANCEL_REQUESTED")
        msg.version += 1
        attempt = self._attempts.get(msg.id)
        if attempt is not None:
            attempt.cancelled = True  # prepared ahead of its due time: do not send it
        return self._finish(msg, "CANCELED")

    def pending_count(self) -> int:
        """Messages not yet in a final state (for tests and benchmarks)."""
        with self._lock:
            return sum(1 for m in self._messages.values() if m.state not in FINAL_STATES)

    # ----- schedules API ---------------------------------------------------------------------

    def create_schedule(self, destination: str, req: PublishRequest) -> str:
        """Create or overwrite a schedule; return its id.

        Raises:
            BadRequest: missing or invalid cron, or invalid id.
        """
        if not req.cron:
            raise BadRequest("Upstash-Cron header is required")
        cron.validate(req.cron)
        sched_id = req.schedule_id or new_id("scd_")
        _check_name(sched_id, "schedule id")
        with self._lock:
            now = now_ms()
            old = self._schedules.get(sched_id)
            spec = replace(req.spec, schedule_id=sched_id)
            if not is_url(destination):
                spec.topic_name = destination
            sched = Schedule(
                id=sched_id,
                cron=req.cron,
                destination=destination,
                spec=spec,
                created_ms=old.created_ms if old else now,
                version=old.version + 1 if old else 0,
            )
            self._schedules[sched_id] = sched
            self._arm_schedule(sched, now)
            return sched_id

    def _arm_schedule(self, sched: Schedule, after_ms: int) -> None:
        """Persist the schedule and arm its next cron time."""
        sched.version += 1
        sched.next_ms = cron.next_fire_ms(sched.cron, after_ms)
        if not sched.paused:
            self._timer.at(sched.next_ms - LEAD_MS, ("sched", sched.id, sched.version))
        self._store.put("schedule", sched.id, sched.to_json())

    def _fire_schedule(self, sched: Schedule, scheduled: bool) -> list[Attempt]:
        """Produce the schedule's message(s); when driven by cron, arm the next time."""
        now = now_ms()
        base = sched.next_ms if scheduled and sched.next_ms else now
        req = PublishRequest(spec=replace(sched.spec, headers=dict(sched.spec.headers)))
        req.not_before_ms = base + int(sched.spec.delay_s * 1000)
        try:
            result = self._publish_new(sched.destination, req, now)
        except QStashDevError:
            result = []
        items = result if isinstance(result, list) else [result]
        sched.last_ms = base
        sched.last_states = {item["messageId"]: "IN_PROGRESS" for item in items}
        if scheduled:
            self._arm_schedule(sched, max(now, base))
        else:
            self._store.put("schedule", sched.id, sched.to_json())
        return []

    def trigger_schedule(self, schedule_id: str) -> list[str]:
        """Test hook: fire a schedule now (its cron times are unchanged); return message ids.

        Raises:
            NotFound: unknown schedule.
        """
        with self._lock:
            sched = self._get_schedule(schedule_id)
            self._fire_schedule(sched, scheduled=False)
            return list(sched.last_states)

    def list_schedules(self) -> list[JSON]:
        """Every schedule."""
        with self._lock:
            return [schedule_to_api(s) for s in self._schedules.values()]

    def get_schedule(self, schedule_id: str) -> JSON:
        """One schedule.

        Raises:
            NotFound: unknown schedule.
        """
        with self._lock:
            return schedule_to_api(self._get_schedule(schedule_id))

    def _get_schedule(self, schedule_id: str) -> Schedule:
        """Look a schedule up or raise NotFound."""
        sched = self._schedules.get(schedule_id)
        if sched is None:
            raise NotFound(f"schedule {schedule_id} not found")
        return sched

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule (unknown ids are fine)."""
        with self._lock:
            self._schedules.pop(schedule_id, None)
            self._store.delete("schedule", schedule_id)

    def set_schedule_paused(self, schedule_id: str, paused: bool) -> None:
        """Pause or resume (both idempotent).

        Raises:
            NotFound: unknown schedule.
        """
        with self._lock:
            sched = self._get_schedule(schedule_id)
            if sched.paused != paused:
                sched.paused = paused
                self._arm_schedule(sched, now_ms())

    # ----- DLQ API ---------------------------------------------------------------------------

    def dlq_list(self, filt: Filter, cursor: str | None, count: int) -> JSON:
        """A page of DLQ entries (oldest first), with `cursor` when more remain.

        Raises:
            BadRequest: a malformed cursor.
        """
        with self._lock:
            page, after = self._dlq_page(filt, cursor, count)
            return _paged({"messages": [dlq_to_api(e) for e in page]}, after)

    def _dlq_page(
        self, filt: Filter, cursor: str | None, count: int
    ) -> tuple[list[DlqEntry], str | None]:
        """Up to `count` entries `filt` matches after `cursor`, oldest first, and the next cursor.

        Raises:
            BadRequest: a malformed cursor.
        """
        start = _dlq_cursor(cursor) if cursor else (-1, -1)
        entries = sorted(self._dlq.values(), key=lambda e: _dlq_order(e.dlq_id))
        matched = [
            e for e in entries if _dlq_order(e.dlq_id) > start and filt.matches(dlq_to_api(e))
        ]
        page = matched[: max(1, count)]
        return page, page[-1].dlq_id if len(matched) > len(page) else None

    def dlq_get(self, dlq_id: str) -> JSON:
        """One DLQ entry.

        Raises:
            NotFound: unknown entry.
        """
        with self._lock:
            return dlq_to_api(self._dlq_entry(dlq_id))

    def _dlq_entry(self, dlq_id: str) -> DlqEntry:
        """Look an entry up or raise NotFound."""
        entry = self._dlq.get(dlq_id)
        if entry is None:
            raise NotFound(f"dlq message {dlq_id} not found")
        return entry

    def dlq_delete(self, dlq_id: str) -> None:
        """Remove one entry.

        Raises:
            NotFound: unknown entry.
        """
        with self._lock:
            self._dlq_entry(dlq_id)
            self._dlq_remove([dlq_id])

    def dlq_delete_many(self, ids: list[str] | None, page: DlqPage) -> JSON:
        """Remove the listed entries, or one page of those the filter matches.

        Raises:
            BadRequest: a malformed cursor.
        """
        with self._lock:
            after = None
            if ids is None:
                entries, after = self._dlq_page(page.filt, page.cursor, page.count)
                ids = [e.dlq_id for e in entries]
            return _paged({"deleted": self._dlq_remove(ids)}, after)

    def _dlq_remove(self, ids: list[str]) -> int:
        """Delete entries; return how many existed."""
        removed = 0
        for dlq_id in ids:
            if self._dlq.pop(dlq_id, None) is not None:
                self._store.delete("dlq", dlq_id)
                removed += 1
        return removed

    def dlq_retry(self, ids: list[str], overrides: PublishRequest | None) -> list[JSON]:
        """Republish entries as new messages (publish headers on the request override).

        Raises:
            NotFound: an id is unknown.
        """
        with self._lock:
            entries = [self._dlq_entry(i) for i in ids]
            out: list[JSON] = []
            now = now_ms()
            for entry in entries:
                spec = _override(entry.spec, overrides)
                msg = self._create(spec, now, now)
                out.append({"messageId": msg.id})
            self._dlq_remove(ids)
            return out

    def dlq_retry_many(
        self, ids: list[str] | None, page: DlqPage, overrides: PublishRequest | None
    ) -> JSON:
        """Retry the listed entries, or one page of those the filter matches.

        Raises:
            NotFound: a listed id is unknown.
            BadRequest: a malformed cursor.
        """
        with self._lock:
            after = None
            if ids is None:
                entries, after = self._dlq_page(page.filt, page.cursor, page.count)
                ids = [e.dlq_id for e in entries]
            return _paged({"responses": self.dlq_retry(ids, overrides)}, after)

    # ----- queues, URL groups, keys, events, flow control ------------------------------------

    def upsert_queue(self, name: str, parallelism: int, paused: bool) -> None:
        """Create or update a queue."""
        with self._lock:
            now = now_ms()
            queue = self._queue(name, now)
            queue.parallelism, queue.paused, queue.updated_ms = max(1, parallelism), paused, now
            self._store.put("queue", name, queue.to_json())
            attempts = self._pump_queue(queue)
        self._sender.submit(attempts)

    def set_queue_paused(self, name: str, paused: bool) -> None:
        """Pause or resume a queue.

        Raises:
            NotFound: unknown queue.
        """
        with self._lock:
            queue = self._get_queue(name)
            self.upsert_queue(name, queue.parallelism, paused)

    def _get_queue(self, name: str) -> Queue:
        """Look a queue up or raise NotFound."""
        queue = self._queues.get(name)
        if queue is None:
            raise NotFound(f"queue {name} not found")
        return queue

    def get_queue(self, name: str) -> JSON:
        """One queue.

        Raises:
            NotFound: unknown queue.
        """
        with self._lock:
            return queue_to_api(self._get_queue(name), self._lag(name))

    def list_queues(self) -> list[JSON]:
        """Every queue."""
        with self._lock:
            return [queue_to_api(q, self._lag(q.name)) for q in self._queues.values()]

    def _lag(self, name: str) -> int:
        """Messages enqueued to `name` and due, not yet delivered (waiting, active, or just
        enqueued: the timer thread may not have moved a message into its queue yet)."""
        now = now_ms()
        return sum(
            1
            for msg in self._messages.values()
            if msg.spec.queue_name == name
            and msg.state not in FINAL_STATES
            and (msg.in_queue or msg.due_ms <= now)
        )

    def delete_queue(self, name: str) -> None:
        """Delete a queue (its waiting messages are cancelled)."""
        with self._lock:
            queue = self._queues.pop(name, None)
            self._store.delete("queue", name)
            for msg_id in list(queue.waiting) if queue else []:
                msg = self._messages.get(msg_id)
                if msg is not None and msg.state not in FINAL_STATES:
                    msg.in_queue = False
                    self._cancel(msg)

    def upsert_endpoints(self, name: str, endpoints: list[dict[str, str]]) -> None:
        """Add endpoints to a URL group (created if needed).

        Raises:
            BadRequest: an endpoint has no URL.
        """
        _check_name(name, "url group")
        with self._lock:
            now = now_ms()
            group = self._groups.setdefault(
                name, UrlGroup(name=name, created_ms=now, updated_ms=now)
            )
            for endpoint in endpoints:
                if not endpoint.get("url"):
                    raise BadRequest("every endpoint needs a url")
                group.endpoints = [e for e in group.endpoints if e["url"] != endpoint["url"]]
                group.endpoints.append({k: v for k, v in endpoint.items() if v is not None})
            group.updated_ms = now
            self._store.put("group", name, group.to_json())

    def remove_endpoints(self, name: str, endpoints: list[dict[str, str]]) -> None:
        """Remove endpoints (by url or name); an empty group is deleted.

        Raises:
            NotFound: unknown group.
        """
        with self._lock:
            group = self._groups.get(name)
            if group is None:
                raise NotFound(f"url group {name} not found")
            urls = {e.get("url") for e in endpoints} - {None}
            names = {e.get("name") for e in endpoints} - {None}
            group.endpoints = [
                e for e in group.endpoints if e["url"] not in urls and e.get("name") not in names
            ]
            group.updated_ms = now_ms()
            if group.endpoints:
                self._store.put("group", name, group.to_json())
            else:
                self.delete_group(name)

    def list_groups(self) -> list[JSON]:
        """Every URL group."""
        with self._lock:
            return [group_to_api(g) for g in self._groups.values()]

    def get_group(self, name: str) -> JSON:
        """One URL group.

        Raises:
            NotFound: unknown group.
        """
        with self._lock:
            group = self._groups.get(name)
            if group is None:
                raise NotFound(f"url group {name} not found")
            return group_to_api(group)

    def delete_group(self, name: str) -> None:
        """Delete a URL group (missing is fine, as the SDK tests expect)."""
        with self._lock:
            self._groups.pop(name, None)
            self._store.delete("group", name)

    def keys(self) -> JSON:
        """The signing keys."""
        with self._lock:
            return {"current": self.current_key, "next": self.next_key}

    def rotate_keys(self) -> JSON:
        """Next becomes current; a fresh next is made."""
        with self._lock:
            self.current_key, self.next_key = self.next_key, signing.new_signing_key()
            self._store.put("keys", "keys", self.keys())
            return self.keys()

    def events(self, filt: Filter, cursor: str | None, count: int) -> JSON:
        """Event-log entries, newest first, with `cursor` when more remain.

        Raises:
            BadRequest: a malformed cursor.
        """
        if cursor and not cursor.isdigit():
            raise BadRequest(f"invalid cursor {cursor!r}")
        with self._lock:
            limit = max(1, min(count, 1000))
            before = int(cursor) if cursor else None
            page: list[JSON] = []
            more = False
            for entry in reversed(self._events):
                if before is not None and entry["_seq"] >= before:
                    continue
                if not filt.matches(entry):
                    continue
                if len(page) == limit:
                    more = True
                    break
                page.append(entry)
            out: JSON = {"events": [{k: v for k, v in e.items() if k != "_seq"} for e in page]}
            if more:
                out["cursor"] = str(page[-1]["_seq"])
            return out

    def flow_list(self) -> list[JSON]:
        """Every flow-control key seen."""
        with self._lock:
            return [flow_to_api(f, now_ms()) for f in self._flows.values()]

    def flow_get(self, key: str) -> JSON:
        """One flow-control key.

        Raises:
            NotFound: unknown key.
        """
        with self._lock:
            return flow_to_api(self._get_flow(key), now_ms())

    def _get_flow(self, key: str) -> FlowState:
        """Look a key up or raise NotFound."""
        flow = self._flows.get(key)
        if flow is None:
            raise NotFound(f"flow control key {key} not found")
        return flow

    def flow_global(self) -> JSON:
        """Global parallelism (no limit locally)."""
        with self._lock:
            return {
                "parallelismMax": 0,
                "parallelismCount": sum(f.in_flight for f in self._flows.values()),
            }

    def flow_update(self, key: str, action: str, params: dict[str, str]) -> None:
        """pause / resume / resetRate / pin / unpin.

        Raises:
            NotFound: unknown key.
            BadRequest: unknown action.
        """
        with self._lock:
            flow = self._get_flow(key)
            _apply_flow_action(flow, action, params)
            attempts = self._pump_flow(flow)
        self._sender.submit(attempts)


def _apply_flow_action(flow: FlowState, action: str, params: dict[str, str]) -> None:
    """Mutate a flow state for one management action.

    Raises:
        BadRequest: unknown action.
    """
    if action in ("pause", "resume"):
        flow.paused = action == "pause"
    elif action == "resetRate":
        flow.window_count = 0
    elif action == "pin":
        if params.get("parallelism"):
            flow.parallelism, flow.pinned_parallelism = int(params["parallelism"]), True
        if params.get("rate"):
            flow.rate, flow.pinned_rate, flow.window_count = int(params["rate"]), True, 0
        if params.get("period"):
            flow.period_s = max(1, int(parse_duration_s(params["period"])))
    elif action == "unpin":
        flow.pinned_parallelism &= params.get("parallelism", "").lower() != "true"
        flow.pinned_rate &= params.get("rate", "").lower() != "true"
    else:
        raise BadRequest(f"unknown flow control action {action}")


def _override(spec: MessageSpec, overrides: PublishRequest | None) -> MessageSpec:
    """A DLQ spec with the publish settings a retry request sets explicitly."""
    spec = replace(spec, headers=dict(spec.headers))
    if overrides is None:
        return spec
    given = overrides.spec
    default = MessageSpec(url=spec.url)
    for name in ("retries", "retry_delay", "timeout_s", "callback", "failure_callback", "method"):
        if getattr(given, name) != getattr(default, name):
            setattr(spec, name, getattr(given, name))
    spec.headers.update(given.headers)
    return spec


def _header(outcome: Outcome, name: str) -> str | None:
    """First value of a response header (names are canonical)."""
    for key, values in outcome.headers.items():
        if key.lower() == name.lower() and values:
            return values[0]
    return None


def _backoff_ms(n: int) -> float:
    """QStash's default backoff before retry n (1-based): min(1 day, e^(2.5 n)) seconds."""
    return min(MAX_BACKOFF_S, math.exp(2.5 * n)) * 1000


def _check_name(name: str, what: str) -> None:
    """Names: letters, digits, `-`, `.`, `_`.

    Raises:
        BadRequest: other characters.
    """
    allowed = set(_ALPHABET + "-._")
    if not name or not set(name) <= allowed:
        raise BadRequest(f"invalid {what}: {name!r}")


def _dlq_order(dlq_id: str) -> tuple[int, int]:
    """Sort key of `<ms>-<seq>` ids."""
    head, _, tail = dlq_id.partition("-")
    try:
        return int(head), int(tail or 0)
    except ValueError:
        return 0, 0


def _dlq_cursor(cursor: str) -> tuple[int, int]:
    """The position a DLQ cursor (a `<ms>-<seq>` id) stands for.

    Raises:
        BadRequest: not such an id.
    """
    head, sep, tail = cursor.partition("-")
    if not (head.isdigit() and sep and tail.isdigit()):
        raise BadRequest(f"invalid cursor {cursor!r}")
    return int(head), int(tail)


def _paged(out: JSON, cursor: str | None) -> JSON:
    """A response with `cursor` set only when more remain (never `""`, reference §0)."""
    if cursor is not None:
        out["cursor"] = cursor
    return out
