"""The HTTP API as a WSGI app: routing on the raw request path, JSON in and out.

The raw path matters: `/v2/publish/http://host/x?a=1` must keep its `//` and query (reference
§2.1), so routing never goes through a URL map that merges slashes.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from werkzeug.wrappers import Request, Response

from qstash_dev import filters
from qstash_dev.engine import Broker
from qstash_dev.errors import BadRequest, MethodNotAllowed, NotFound, QStashDevError, Unauthorized
from qstash_dev.filters import Params
from qstash_dev.publishing import PublishRequest, parse_publish, split_destination

log = logging.getLogger(__name__)
WSGIEnv = dict[str, Any]
StartResponse = Callable[..., Any]


@dataclass
class Call:
    """One API call: the request, its raw path pieces and the parsed query."""

    request: Request
    path: str
    raw_query: str
    query: dict[str, list[str]]

    def publish_request(self, destination: str) -> PublishRequest:
        """Parse the publish headers (and `upstash-*` query keys) of this call."""
        return self._parse(destination, [])

    def _parse(self, destination: str, extra: list[tuple[str, str]]) -> PublishRequest:
        """Parse with extra config items."""
        headers = list(self.request.headers.items()) + extra
        ip = self.request.remote_addr or "127.0.0.1"
        return parse_publish(destination, headers, self.request.get_data(), ip)

    def json_body(self) -> Any:
        """The JSON body, or None when empty.

        Raises:
            BadRequest: not JSON.
        """
        data = self.request.get_data()
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except ValueError as exc:
            raise BadRequest("body is not valid JSON") from exc


Handler = Callable[[Broker, Call, re.Match[str]], Response]


def _json(payload: Any, status: int = 200) -> Response:
    """A JSON response."""
    return Response(json.dumps(payload), status=status, mimetype="application/json")


def _ok() -> Response:
    """An empty 200."""
    return Response(b"", status=200)


# ----- publishing ------------------------------------------------------------------------------


def _destination(call: Call, tail: str) -> tuple[str, PublishRequest]:
    """Destination and parsed publish request for a path tail."""
    destination, config = split_destination(tail, call.raw_query)
    req = call._parse(destination, config)
    return destination, req


def publish(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """POST /v2/publish/{destination}."""
    destination, req = _destination(call, m.group(1))
    req.spec.queue_name = None
    deduplicated, result = broker.publish(destination, req)
    return _json(result, 202 if deduplicated else 200)


def enqueue(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """POST /v2/enqueue/{queue}/{destination}."""
    destination, req = _destination(call, m.group(2))
    req.spec.queue_name = unquote(m.group(1))
    deduplicated, result = broker.publish(destination, req)
    return _json(result, 202 if deduplicated else 200)


def batch(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """POST /v2/batch: a JSON array of publishes."""
    items = call.json_body()
    if not isinstance(items, list):
        raise BadRequest("batch body must be a JSON array")
    ip = call.request.remote_addr or "127.0.0.1"
    parsed = [_batch_item(item, ip) for item in items]  # validate all before accepting any
    return _json([broker.publish(dest, req)[1] for dest, req in parsed])


def _batch_item(item: Any, ip: str) -> tuple[str, PublishRequest]:
    """One batch entry.

    Raises:
        BadRequest: malformed entry.
    """
    if not isinstance(item, dict) or not item.get("destination"):
        raise BadRequest("every batch item needs a destination")
    destination, config = split_destination(str(item["destination"]), "")
    headers = [(str(k), str(v)) for k, v in (item.get("headers") or {}).items()]
    body = item.get("body")
    raw = body.encode() if isinstance(body, str) else b""
    req = parse_publish(destination, headers + config, raw, ip)
    req.spec.queue_name = item.get("queue") or None
    return destination, req


# ----- messages --------------------------------------------------------------------------------


def get_message(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """GET /v2/messages/{id}."""
    return _json(broker.get_message(unquote(m.group(1))))


def cancel_message(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """DELETE /v2/messages/{id}."""
    broker.cancel(unquote(m.group(1)))
    return _json({"cancelled": 1})


def cancel_messages(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """DELETE /v2/messages: ids or filters from a JSON body or the query."""
    params = _params(call)
    ids = _split(params.pop("messageIds", None))
    count = _given_count(params, maximum=500)  # none given: every match (the API docs)
    filt = filters.parse(params, filters.MESSAGES)
    return _json({"cancelled": broker.cancel_many(ids, filt, count)})


def _params(call: Call) -> Params:
    """The query merged with a JSON object body (qstash-py sends a body), minus the token."""
    params = {k: list(v) for k, v in call.query.items() if k != "qstash_token"}
    body = call.json_body()
    if isinstance(body, dict):
        for key, value in body.items():
            values = value if isinstance(value, list) else [value]
            params[key] = [str(v) for v in values if v is not None]
    return params


def _split(values: list[str] | None) -> list[str] | None:
    """Repeated and comma-joined values as one list (None stays None)."""
    if values is None:
        return None
    return [p for v in values for p in v.split(",") if p]


# ----- schedules -------------------------------------------------------------------------------


def create_schedule(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """POST /v2/schedules/{destination}."""
    destination, req = _destination(call, m.group(1))
    return _json({"scheduleId": broker.create_schedule(destination, req)})


def list_schedules(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """GET /v2/schedules."""
    return _json(broker.list_schedules())


def schedule_item(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """GET / DELETE /v2/schedules/{id}."""
    schedule_id = unquote(m.group(1))
    if call.request.method == "DELETE":
        broker.delete_schedule(schedule_id)
        return _ok()
    return _json(broker.get_schedule(schedule_id))


def pause_schedule(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """PATCH or POST /v2/schedules/{id}/pause|resume."""
    broker.set_schedule_paused(unquote(m.group(1)), m.group(2) == "pause")
    return _ok()


# ----- DLQ -------------------------------------------------------------------------------------


def list_dlq(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """GET /v2/dlq."""
    params = _params(call)
    cursor = _first(params.pop("cursor", None))
    count = _count(params, default=100, maximum=100, clamp=True)
    return _json(broker.dlq_list(filters.parse(params, filters.DLQ_LIST), cursor, count))


def dlq_item(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """GET / DELETE /v2/dlq/{id}."""
    dlq_id = unquote(m.group(1))
    if call.request.method == "DELETE":
        broker.dlq_delete(dlq_id)
        return _ok()
    return _json(broker.dlq_get(dlq_id))


def delete_dlq(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """DELETE /v2/dlq: `dlqIds` (JSON body or repeated query), else a page of a filter."""
    ids, page = _dlq_bulk(call)
    return _json(broker.dlq_delete_many(ids, page))


def retry_dlq_one(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """POST /v2/dlq/retry/{id}."""
    overrides = call.publish_request("")
    return _json(broker.dlq_retry([unquote(m.group(1))], overrides)[0], 201)


def retry_dlq_many(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """POST /v2/dlq/retry: `dlqIds` (query or JSON body), else a page of a filter."""
    ids, page = _dlq_bulk(call)
    return _json(broker.dlq_retry_many(ids, page, call.publish_request("")), 201)


def _dlq_bulk(call: Call) -> tuple[list[str] | None, filters.DlqPage]:
    """Explicit ids, and the filtered page (`count` ≤ 100 after `cursor`) taken without them.

    Raises:
        BadRequest: an unknown filter or a bad count.
    """
    params = _params(call)
    ids = _split(params.pop("dlqIds", None))
    cursor = _first(params.pop("cursor", None))
    count = _count(params, default=100, maximum=100)
    return ids, filters.DlqPage(filters.parse(params, filters.DLQ_BULK), cursor, count)


def _count(params: Params, default: int, maximum: int, *, clamp: bool = False) -> int:
    """Pop `count` (see `_given_count`), or `default` when absent.

    Raises:
        BadRequest: a bad count.
    """
    count = _given_count(params, maximum, clamp=clamp)
    return default if count is None else count


def _given_count(params: Params, maximum: int, *, clamp: bool = False) -> int | None:
    """Pop `count`: a whole number from 1 to `maximum` (lists clamp larger ones to it).

    Raises:
        BadRequest: not a whole number, below 1, or (unless clamped) above `maximum`.
    """
    raw = params.pop("count", None)
    if not raw:
        return None
    text = raw[0].strip()
    if len(raw) != 1 or not text.isdigit() or int(text) < 1:
        raise BadRequest(f"count must be a whole number from 1 to {maximum}, got {raw}")
    if int(text) > maximum and not clamp:
        raise BadRequest(f"count must be at most {maximum}, got {text}")
    return min(int(text), maximum)


# ----- queues, URL groups, keys, events, flow control ------------------------------------------


def upsert_queue(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """POST /v2/queues."""
    body = call.json_body()
    if not isinstance(body, dict) or not body.get("queueName"):
        raise BadRequest("queueName is required")
    broker.upsert_queue(
        str(body["queueName"]), int(body.get("parallelism") or 1), bool(body.get("paused"))
    )
    return _ok()


def list_queues(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """GET /v2/queues."""
    return _json(broker.list_queues())


def queue_item(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """GET / DELETE /v2/queues/{name}."""
    name = unquote(m.group(1))
    if call.request.method == "DELETE":
        broker.delete_queue(name)
        return _ok()
    return _json(broker.get_queue(name))


def pause_queue(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """POST /v2/queues/{name}/pause|resume."""
    broker.set_queue_paused(unquote(m.group(1)), m.group(2) == "pause")
    return _ok()


def endpoints(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """POST / DELETE /v2/topics/{name}/endpoints."""
    body = call.json_body()
    items = body.get("endpoints") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadRequest("endpoints must be a list")
    clean = [
        {k: str(v) for k, v in e.items() if v is not None} for e in items if isinstance(e, dict)
    ]
    if call.request.method == "DELETE":
        broker.remove_endpoints(unquote(m.group(1)), clean)
    else:
        broker.upsert_endpoints(unquote(m.group(1)), clean)
    return _ok()


def list_groups(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """GET /v2/topics."""
    return _json(broker.list_groups())


def group_item(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """GET / DELETE /v2/topics/{name}."""
    name = unquote(m.group(1))
    if call.request.method == "DELETE":
        broker.delete_group(name)
        return _ok()
    return _json(broker.get_group(name))


def get_keys(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """GET /v2/keys."""
    return _json(broker.keys())


def rotate_keys(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """POST /v2/keys/rotate."""
    return _json(broker.rotate_keys())


def list_events(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """GET /v2/events (key `events`) and GET /v2/logs (key `logs`)."""
    params = {k: list(v) for k, v in call.query.items() if k != "qstash_token"}
    cursor = _first(params.pop("cursor", None))
    count = _count(params, default=100, maximum=1000, clamp=True)
    result = broker.events(filters.parse(params, filters.EVENTS), cursor, count)
    if m.group(1) == "logs":
        result["logs"] = result.pop("events")
    return _json(result)


def list_flows(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """GET /v2/flowControl."""
    return _json(broker.flow_list())


def get_flow(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """GET /v2/flowControl/{key}."""
    return _json(broker.flow_get(unquote(m.group(1))))


def update_flow(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """POST /v2/flowControl/{key}/pause|resume|resetRate|pin|unpin."""
    params = {k: v[0] for k, v in call.query.items() if v}
    broker.flow_update(unquote(m.group(1)), m.group(2), params)
    return _ok()


def global_parallelism(broker: Broker, call: Call, m: re.Match[str]) -> Response:
    """GET /v2/globalParallelism."""
    return _json(broker.flow_global())


ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", r"/v2/publish/(.+)", publish),
    ("POST", r"/v2/enqueue/([^/]+)/(.+)", enqueue),
    ("POST", r"/v2/batch", batch),
    ("GET", r"/v2/messages/([^/]+)", get_message),
    ("DELETE", r"/v2/messages/([^/]+)", cancel_message),
    ("DELETE", r"/v2/messages/?", cancel_messages),
    ("GET", r"/v2/schedules/?", list_schedules),
    ("PATCH POST", r"/v2/schedules/([^/:]+)/(pause|resume)", pause_schedule),
    ("GET DELETE", r"/v2/schedules/([^/:]+)", schedule_item),
    ("POST", r"/v2/schedules/(.+)", create_schedule),
    ("GET", r"/v2/dlq/?", list_dlq),
    ("DELETE", r"/v2/dlq/?", delete_dlq),
    ("POST", r"/v2/dlq/retry/([^/]+)", retry_dlq_one),
    ("POST", r"/v2/dlq/retry/?", retry_dlq_many),
    ("GET DELETE", r"/v2/dlq/([^/]+)", dlq_item),
    ("POST", r"/v2/queues/?", upsert_queue),
    ("GET", r"/v2/queues/?", list_queues),
    ("POST", r"/v2/queues/([^/]+)/(pause|resume)", pause_queue),
    ("GET DELETE", r"/v2/queues/([^/]+)", queue_item),
    ("POST DELETE", r"/v2/topics/([^/]+)/endpoints", endpoints),
    ("GET", r"/v2/topics/?", list_groups),
    ("GET DELETE", r"/v2/topics/([^/]+)", group_item),
    ("GET", r"/v2/keys", get_keys),
    ("POST", r"/v2/keys/rotate", rotate_keys),
    ("GET", r"/v2/(events|logs)", list_events),
    ("GET", r"/v2/flowControl/?", list_flows),
    ("POST", r"/v2/flowControl/([^/]+)/(pause|resume|resetRate|pin|unpin)", update_flow),
    ("GET", r"/v2/flowControl/([^/]+)", get_flow),
    ("GET", r"/v2/globalParallelism", global_parallelism),
]
_COMPILED = [(set(verbs.split()), re.compile(pattern), h) for verbs, pattern, h in ROUTES]


class ApiApp:
    """The WSGI application."""

    def __init__(self, broker: Broker, token: str) -> None:
        """Serve `broker` to callers holding `token`."""
        self.broker, self.token = broker, token

    def __call__(self, environ: WSGIEnv, start_response: StartResponse) -> Iterable[bytes]:
        """WSGI entry point."""
        request = Request(environ)
        try:
            response = self.dispatch(request, environ)
        except QStashDevError as exc:
            response = _json({"error": str(exc)}, exc.status)
        except (ValueError, TypeError) as exc:  # malformed values in a JSON body or query
            response = _json({"error": f"bad request: {exc}"}, 400)
        except Exception:  # a bug: log it, answer in the API's error shape
            log.exception("unhandled error for %s %s", request.method, request.path)
            response = _json({"error": "internal server error"}, 500)
        return response(environ, start_response)

    def dispatch(self, request: Request, environ: WSGIEnv) -> Response:
        """Authenticate, route, run the handler.

        Raises:
            QStashDevError: anything the client should see as an error.
        """
        raw = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
        if not raw.startswith("/"):
            raw = environ.get("PATH_INFO", "") + "?" + environ.get("QUERY_STRING", "")
        path, _, raw_query = raw.partition("?")
        query = parse_qs(raw_query, keep_blank_values=True)
        self._authenticate(request, query)
        call = Call(request, path, raw_query, query)
        allowed = False
        for verbs, pattern, handler in _COMPILED:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if request.method in verbs:
                return handler(self.broker, call, match)
            allowed = True
        if allowed:
            raise MethodNotAllowed(f"{request.method} not allowed on {path}")
        raise NotFound(f"no route for {request.method} {path}")

    def _authenticate(self, request: Request, query: dict[str, list[str]]) -> None:
        """Bearer header or `?qstash_token=`.

        Raises:
            Unauthorized: neither matches.
        """
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else ""
        given = given or (query.get("qstash_token") or [""])[0]
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise Unauthorized("invalid or missing token")


def _first(values: list[str] | None) -> str | None:
    """First value of a query parameter, if any."""
    return values[0] if values else None
