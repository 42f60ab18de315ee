"""The HTTP side of the sandbox: AimHarder's booking endpoints plus the `/_sandbox` admin API.

A stdlib `ThreadingHTTPServer` (one daemon thread per connection, HTTP/1.1 keep-alive, Nagle
off). A booking's arrival instant is the kernel's receive timestamp of the segment that carried
its request line (`SO_TIMESTAMPNS`, Linux), i.e. when it reached this machine's network stack,
not when a Python thread got around to parsing it; where the kernel gives none, the instant the
request line is parsed.
"""

from __future__ import annotations

import io
import ipaddress
import json
import socket
import struct
import sys
import threading
import time
from email.utils import formatdate
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfoNotFoundError

from aimharder_sandbox.clock import settings_from_ms
from aimharder_sandbox.state import (
    DEFAULT_BOX,
    DEFAULT_CAPACITY,
    DEFAULT_TIMEOUT_DELAY_MS,
    DEFAULT_ZONE,
    Fault,
    SandboxClass,
    SandboxState,
    parse_opens_at,
    scheduled_class,
)

AUTH_COOKIE = "amhrdrauth"
BOX_HEADER = "X-Sandbox-Box"
GARBAGE_BODY = b"<html><body>Service temporarily garbled</body></html>"
# Linux: SO_TIMESTAMPNS == SCM_TIMESTAMPNS == 35 (the stdlib does not export them).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("qq")
_ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0


class StampedReader(io.RawIOBase):
    """A socket reader that keeps the kernel receive timestamp of the last segment read."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self.last_ns: int | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        nbytes, ancillary, _flags, _addr = self._sock.recvmsg_into([buffer], _ANCILLARY_SIZE)
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                seconds, nanos = _TIMESPEC.unpack(data[: _TIMESPEC.size])
                self.last_ns = seconds * 1_000_000_000 + nanos
        return nbytes


def enable_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp what this socket receives; False where it can't."""
    if not sys.platform.startswith("linux") or not _ANCILLARY_SIZE:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def stamped_reader(sock: socket.socket) -> StampedReader | None:
    """A timestamping reader for an accepted socket; None where the kernel can't stamp.

    A TLS-wrapped socket (tests serve the sandbox over TLS) has no `recvmsg`: no stamps.
    """
    if type(sock) is not socket.socket:
        return None
    return StampedReader(sock) if enable_timestamps(sock) else None


class SandboxServer(ThreadingHTTPServer):
    """A threaded server that holds the shared state and a stop signal for hung replies."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: SandboxState) -> None:
        self.state = state
        self.stopping = threading.Event()
        super().__init__(address, SandboxHandler)

    def server_bind(self) -> None:
        super().server_bind()
        # Accepted sockets inherit the option, so even a first request queued before
        # accept() carries its receive timestamp.
        enable_timestamps(self.socket)

    def server_close(self) -> None:
        self.stopping.set()
        super().server_close()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.state.note_connection()
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hung up (they timed out on purpose); report anything else."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def box_from_host(host: str | None) -> str:
    """The first label of a DNS host name; the default box for IPs, localhost or no host."""
    name = (host or "").rsplit(":", 1)[0].strip("[]")
    if not name or "." not in name:
        return DEFAULT_BOX
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name.split(".", 1)[0]
    return DEFAULT_BOX


def _int_or(value: Any, default: int | None) -> int | None:
    return default if value is None else int(value)


def class_from_json(data: dict[str, Any]) -> SandboxClass:
    """A class definition from the admin API's JSON: by `day` (+ `opens_at`), or by `start`.

    Raises:
        KeyError, TypeError, ValueError: a field is missing or malformed.
    """
    common: dict[str, Any] = {
        "box": str(data.get("box") or DEFAULT_BOX),
        "capacity": _int_or(data.get("capacity"), DEFAULT_CAPACITY) or 0,
        "waitlist": _int_or(data.get("waitlist"), 0) or 0,
        "name": str(data.get("name") or "WOD"),
    }
    if data.get("start") is not None:
        try:
            return scheduled_class(
                str(data["class_id"]),
                start=str(data["start"]),
                zone=str(data.get("timezone") or DEFAULT_ZONE),
                opens_days_before=_int_or(data.get("opens_days_before"), None),
                opens_hours_before=_int_or(data.get("opens_hours_before"), None),
                **common,
            )
        except ZoneInfoNotFoundError:
            raise ValueError(f"unknown time zone {data.get('timezone')!r}") from None
    return SandboxClass(
        class_id=str(data["class_id"]),
        day=str(data["day"]),
        opens_at_ns=parse_opens_at(data.get("opens_at")),
        time=str(data.get("time") or "08:00 - 09:00"),
        **common,
    )


class SandboxHandler(BaseHTTPRequestHandler):
    """One connection; AimHarder routes and the admin API."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each answer waits ~40 ms for the client's delayed ACK
    server: SandboxServer
    arrived_ns: int = 0
    skew_ns: int = 0  # the gym's clock minus ours, for this request (offset + a jitter draw)
    _stamps: StampedReader | None = None

    def setup(self) -> None:
        super().setup()
        self._stamps = stamped_reader(self.connection)
        if self._stamps is not None:
            self.rfile = io.BufferedReader(self._stamps)

    def parse_request(self) -> bool:
        # The request line has just been read: its segment's kernel stamp is the arrival.
        stamped = self._stamps.last_ns if self._stamps is not None else None
        self.arrived_ns = stamped or time.time_ns()
        self.skew_ns = self.state.clock.draw_skew_ns()
        if self._stamps is not None:
            self._stamps.last_ns = None
        return super().parse_request()

    @property
    def gym_arrived_ns(self) -> int:
        """What the gym's clock read when the request arrived."""
        return self.arrived_ns + self.skew_ns

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header, by the gym's clock (floored to the second, as HTTP dates are)."""
        if timestamp is None:
            timestamp = (time.time_ns() + self.skew_ns) / 1e9
        return formatdate(timestamp, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: request lines carry no secrets, but the benchmarks flood stderr."""

    # --- plumbing ------------------------------------------------------------------------

    @property
    def state(self) -> SandboxState:
        return self.server.state

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _form(self) -> dict[str, str]:
        parsed = parse_qs(self._read_body().decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items()}

    def _json(self) -> dict[str, Any]:
        body = self._read_body()
        data = json.loads(body) if body else {}
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data

    def _query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def _user(self) -> str | None:
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie") or "")
        except CookieError:
            return None
        morsel = cookie.get(AUTH_COOKIE)
        return morsel.value if morsel else None

    def _box(self) -> str:
        return self.headers.get(BOX_HEADER) or box_from_host(self.headers.get("Host"))

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode())

    # --- routing -------------------------------------------------------------------------

    def do_GET(self) -> None:
        route = urlsplit(self.path).path
        if route == "/api/bookings":
            query = self._query()
            body = self.state.listing(
                box=self._box(),
                day=query.get("day", ""),
                user=self._user(),
                box_param=query.get("box"),
            )
            self._send_json(200, body)
        elif route == "/_sandbox/arrivals":
            self._send_json(200, self.state.arrivals())
        elif route == "/_sandbox/state":
            self._send_json(200, self.state.snapshot())
        elif route == "/_sandbox/clock":
            self._send_json(200, self.state.clock.settings.to_json())
        else:
            self._send(200, b"<html><body>AimHarder sandbox</body></html>", "text/html")

    def do_HEAD(self) -> None:
        self._send(200, b"", "text/html")

    def do_DELETE(self) -> None:
        if urlsplit(self.path).path == "/_sandbox/arrivals":
            self.state.clear_arrivals()
            self._send_json(200, {"cleared": True})
        else:
            self._send_json(404, {"error": "no such route"})

    def do_POST(self) -> None:
        route = urlsplit(self.path).path
        handler = _POST_ROUTES.get(route)
        if handler is None:
            self._read_body()
            self._send_json(404, {"error": "no such route"})
            return
        try:
            handler(self)
        except (KeyError, TypeError, ValueError) as exc:
            self._send_json(400, {"error": f"bad request: {exc}"})

    # --- AimHarder -----------------------------------------------------------------------

    def post_book(self) -> None:
        form = self._form()
        reply = self.state.book(
            box=self._box(),
            class_id=form.get("id", ""),
            day=form.get("day", ""),
            user=self._user(),
            at_ns=self.arrived_ns,
            gym_ns=self.gym_arrived_ns,
        )
        self._delay(reply.fault)
        if reply.fault.mode == "garbage":
            self._send(200, GARBAGE_BODY, "text/html")
        elif reply.body is None:
            self._send(reply.status, b"<html><body>500 Internal Server Error</body></html>")
        else:
            self._send_json(reply.status, reply.body)

    def _delay(self, fault: Fault) -> None:
        """Hold the reply for `timeout`/`slow` faults; wakes early when the server stops."""
        if fault.mode == "timeout":
            self.server.stopping.wait(_seconds(fault.delay_ms, DEFAULT_TIMEOUT_DELAY_MS))
        elif fault.mode == "slow":
            self.server.stopping.wait(_seconds(fault.delay_ms, 0))

    def post_cancel(self) -> None:
        form = self._form()
        self._send_json(
            200, self.state.cancel(reservation_id=form.get("id", ""), user=self._user())
        )

    # --- admin ---------------------------------------------------------------------------

    def post_classes(self) -> None:
        cls = class_from_json(self._json())
        self.state.define_class(cls)
        self._send_json(201, {"class_id": cls.class_id, "day": cls.day, "box": cls.box})

    def post_sessions(self) -> None:
        data = self._json()
        cookie = str(data["cookie"])
        self.state.add_session(cookie, _int_or(data.get("credits"), None))
        self._send_json(201, {"registered": True})

    def post_faults(self) -> None:
        data = self._json()
        rate = data.get("rate")
        fault = Fault(
            str(data.get("mode", "none")),
            _int_or(data.get("count"), None),
            _int_or(data.get("delay_ms"), None),
            None if rate is None else float(rate),
            _int_or(data.get("seed"), None),
        )
        self.state.set_fault(
            fault.mode, fault.count, fault.delay_ms, rate=fault.rate, seed=fault.seed
        )
        self._send_json(200, {"mode": fault.mode, "count": fault.count, "rate": fault.rate})

    def post_clock(self) -> None:
        data = self._json()
        seed = data.get("seed")
        settings = settings_from_ms(
            float(data.get("offset_ms") or 0),
            float(data.get("jitter_ms") or 0),
            None if seed is None else int(seed),
        )
        self.state.set_clock(settings)
        self._send_json(200, settings.to_json())

    def post_boxes(self) -> None:
        data = self._json()
        box, box_id = str(data.get("box") or DEFAULT_BOX), str(data["box_id"])
        self.state.set_box_id(box, box_id)
        self._send_json(200, {"box": box, "box_id": box_id})

    def post_reset(self) -> None:
        self._read_body()
        self.state.reset()
        self._send_json(200, {"reset": True})


def _seconds(delay_ms: int | None, default_ms: int) -> float:
    return (default_ms if delay_ms is None else delay_ms) / 1000


_POST_ROUTES = {
    "/api/book": SandboxHandler.post_book,
    "/api/cancelBook": SandboxHandler.post_cancel,
    "/_sandbox/classes": SandboxHandler.post_classes,
    "/_sandbox/sessions": SandboxHandler.post_sessions,
    "/_sandbox/faults": SandboxHandler.post_faults,
    "/_sandbox/reset": SandboxHandler.post_reset,
    "/_sandbox/clock": SandboxHandler.post_clock,
    "/_sandbox/boxes": SandboxHandler.post_boxes,
}


def make_server(host: str, port: int, state: SandboxState | None = None) -> SandboxServer:
    """A bound, not yet serving, sandbox server (`port=0` picks a free port)."""
    return SandboxServer((host, port), state or SandboxState())
