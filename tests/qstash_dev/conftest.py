"""Fixtures for the qstash_dev tests: a real server, SDK clients and a verifying receiver."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import qstash

from qstash_dev.testing import RunningServer, run_server

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Delivery:
    """One request the receiver got."""

    method: str
    path: str
    url: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str | None
    started: float
    finished: float = 0.0

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        return self.headers.get(name.lower())


@dataclass
class LocalReceiver:
    """A threaded HTTP server on 127.0.0.1 that records and signature-checks deliveries."""

    base_url: str
    verifier: qstash.Receiver
    deliveries: list[Delivery] = field(default_factory=list)
    replies: dict[str, list[Reply]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def url(self, path: str) -> str:
        """Absolute URL for a path (may include a query)."""
        return self.base_url + path

    def respond(self, path: str, *replies: Reply) -> None:
        """Answer `path` with these replies in turn (the last one repeats)."""
        self.replies[path.split("?")[0]] = list(replies)

    def slow(self, path: str, seconds: float) -> None:
        """Make `path` answer after a pause."""
        self.delays[path] = seconds

    def reply_for(self, path: str) -> Reply:
        """Next configured reply (200 `ok` by default)."""
        queue = self.replies.get(path.split("?")[0])
        if not queue:
            return 200, {}, b"ok"
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def record(self, delivery: Delivery) -> None:
        """Store a delivery and wake waiters."""
        with self.cond:
            self.deliveries.append(delivery)
            self.cond.notify_all()

    def at(self, path: str) -> list[Delivery]:
        """Deliveries to a path (query ignored)."""
        with self.cond:
            return [d for d in self.deliveries if d.path.split("?")[0] == path.split("?")[0]]

    def wait_for(self, path: str, count: int = 1, timeout: float = 10.0) -> list[Delivery]:
        """Block until `count` deliveries reached `path`; fail the test otherwise."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.at(path)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"{len(self.at(path))} of {count} deliveries to {path}")
                self.cond.wait(left)
            return self.at(path)


def _handler(receiver_ref: list[LocalReceiver]) -> type[BaseHTTPRequestHandler]:
    """Request handler class bound to a receiver."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            receiver = receiver_ref[0]
            started = time.time()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = receiver.url(self.path)
            verified, error = True, None
            try:
                receiver.verifier.verify(
                    signature=self.headers.get("Upstash-Signature", ""),
                    body=body.decode("utf-8"),
                    url=url,
                )
            except Exception as exc:  # record, assert in the test
                verified, error = False, repr(exc)
            headers = {k.lower(): v for k, v in self.headers.items()}
            delivery = Delivery(
                self.command, self.path, url, headers, body, verified, error, started
            )
            pause = receiver.delays.get(self.path.split("?")[0], 0.0)
            if pause:
                time.sleep(pause)
            status, extra, out = receiver.reply_for(self.path)
            delivery.finished = time.time()
            receiver.record(delivery)
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def srv() -> Iterator[RunningServer]:
    """A fresh in-memory qstash_dev server with fast retries."""
    with run_server(port=0, retry_delay_scale=0.001) as server:
        yield server


@pytest.fixture
def client(srv: RunningServer) -> Iterator[qstash.QStash]:
    """The official Python SDK pointed at the server."""
    yield qstash.QStash(srv.token, base_url=srv.url, retry=False)


def start_receiver(srv: RunningServer) -> tuple[LocalReceiver, Callable[[], None]]:
    """Start a receiver verifying with the server's keys; return it and a stop function."""
    ref: list[LocalReceiver] = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(ref))
    httpd.daemon_threads = True
    verifier = qstash.Receiver(srv.current_signing_key, srv.next_signing_key)
    ref.append(LocalReceiver(f"http://127.0.0.1:{httpd.server_port}", verifier))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)

    return ref[0], stop


@pytest.fixture
def receiver(srv: RunningServer) -> Iterator[LocalReceiver]:
    """A local destination that verifies every delivery with `qstash.Receiver`."""
    rec, stop = start_receiver(srv)
    yield rec
    stop()
    assert all(d.verified for d in rec.deliveries), [d.error for d in rec.deliveries]


@pytest.fixture
def make_receiver() -> Iterator[Callable[[RunningServer], LocalReceiver]]:
    """Start extra receivers for a given server (stopped at teardown)."""
    stops: list[Callable[[], None]] = []

    def make(server: RunningServer) -> LocalReceiver:
        rec, stop = start_receiver(server)
        stops.append(stop)
        return rec

    yield make
    for stop in stops:
        stop()
