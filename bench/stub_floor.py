"""The floor under the firing benchmarks: N raw bookings fired at the sandbox at one instant.

No app, no database, no QStash: an ideal pre-connected sender. Every request has its own
keep-alive connection, opened and warmed (one HEAD) before the instant, and its bytes are
prepared; at the instant they are written:

- `--mode line` (default): from ONE thread, back to back in rank order (what a perfect
  firing line would do; nothing a client can do beats it on this machine);
- `--mode threads`: one thread per request, all at the same instant (or `--stagger-ms` apart
  in order): what N independent Python senders get.

Standalone (no `--url`): starts `python -m aimharder_sandbox` in a subprocess, fires `--n`
bookings at one class opening 1 s ahead and prints lateness against that instant (kernel
receive stamps, `SO_TIMESTAMPNS`), FIFO inversions and the load average.

With `--url`: fires into an already running sandbox (bench/scaleout.py's, for the same run's
floor): `--n` requests spread in turn over `--classes a,b,c` (user `floor-<class>-<i>`). It
connects first, then defines those classes (as many places as requests) opening at the next
whole second, fires at that opening as the sandbox holds it (in the gym's clock: the sandbox's
clock offset and jitter taken into account, so that no request is early by it), and prints one
JSON line about the sender only; the caller measures from the sandbox's stamps.

    python bench/stub_floor.py --n 200 --stagger-ms 0
    python bench/stub_floor.py --n 200 --mode threads
    python bench/stub_floor.py --url http://127.0.0.1:8090 --classes f1,f2 --n 40
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

DAY = "20261130"


@dataclass(frozen=True)
class Booking:
    """One request of the floor: which class, which user (the sandbox's `amhrdrauth`)."""

    class_id: str
    user: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def spread(class_ids: list[str], n: int) -> list[Booking]:
    """N bookings over the classes in turn: rank 0 of every class first, then rank 1, ..."""
    per_class = [0] * len(class_ids)
    out = []
    for i in range(n):
        k = i % len(class_ids)
        out.append(Booking(class_ids[k], f"floor-{class_ids[k]}-{per_class[k]}"))
        per_class[k] += 1
    return out


def request_bytes(host: str, booking: Booking) -> bytes:
    """The `/api/book` request as the app's firing line writes it (form body, cookie)."""
    body = f"id={booking.class_id}&day={DAY}&insist=0&familyId="
    head = (
        f"POST /api/book HTTP/1.1\r\nHost: {host}\r\nCookie: amhrdrauth={booking.user}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return (head + body).encode()


def read_response(sock: socket.socket) -> None:
    """Read one HTTP response (headers, then Content-Length bytes) off a keep-alive socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length and (chunk := sock.recv(65536)):
        body += chunk


def connect(host: str, port: int, n: int) -> list[socket.socket]:
    """N warm connections: opened, Nagle off, one HEAD answered on each (handler ready)."""
    socks = []
    for _ in range(n):
        sock = socket.create_connection((host, port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(sock)
    head = f"HEAD / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    for sock in socks:
        sock.sendall(head)
    for sock in socks:
        data = b""
        while b"\r\n\r\n" not in data and (chunk := sock.recv(4096)):
            data += chunk
    return socks


def wait_until(target_ns: int) -> None:
    """Sleep to 3 ms before `target_ns`, then spin (yielding) to it."""
    while (left := target_ns - time.time_ns()) > 0:
        time.sleep(left / 1e9 - 0.003 if left > 3_000_000 else 0)


def fire_line(
    host: str,
    port: int,
    bookings: list[Booking],
    at_ns: int,
    socks: list[socket.socket] | None = None,
) -> dict[str, float]:
    """Write every prepared request back to back from this thread at `at_ns` (over `socks`,
    already connected, or new ones)."""
    socks = socks or connect(host, port, len(bookings))
    payloads = [request_bytes(f"{host}:{port}", b) for b in bookings]
    gc.disable()
    try:
        wait_until(at_ns)
        first = time.time_ns()
        for sock, payload in zip(socks, payloads, strict=True):
            sock.sendall(payload)
        last = time.time_ns()
    finally:
        gc.enable()
    for sock in socks:
        read_response(sock)
        sock.close()
    return {"first_write_ms": (first - at_ns) / 1e6, "last_write_ms": (last - at_ns) / 1e6}


def fire_threads(
    host: str, port: int, bookings: list[Booking], at_ns: int, stagger_ms: float = 0.0
) -> dict[str, float]:
    """One thread per request, each on its own warm connection, at `at_ns + i × stagger`."""
    conns = []
    for _ in bookings:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        conn.request("HEAD", "/")
        conn.getresponse().read()
        conns.append(conn)

    def fire(i: int, conn: http.client.HTTPConnection, booking: Booking) -> None:
        wait_until(at_ns + int(i * stagger_ms * 1e6))
        body = f"id={booking.class_id}&day={DAY}&insist=0&familyId="
        headers = {
            "Cookie": f"amhrdrauth={booking.user}",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        conn.request("POST", "/api/book", body, headers)
        conn.getresponse().read()

    threads = [
        threading.Thread(target=fire, args=(i, c, b))
        for i, (c, b) in enumerate(zip(conns, bookings, strict=True))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for conn in conns:
        conn.close()
    return {}


def fire(
    url: str, bookings: list[Booking], at_ns: int, mode: str, stagger_ms: float = 0.0
) -> dict[str, float]:
    """Fire the bookings at the sandbox at `url` with the chosen sender."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if mode == "line":
        return fire_line(host, port, bookings, at_ns)
    return fire_threads(host, port, bookings, at_ns, stagger_ms)


def admin(url: str, method: str, path: str, body: object | None = None) -> object:
    """One call to the sandbox's `/_sandbox` admin API."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        data = None if body is None else json.dumps(body)
        conn.request(method, path, data, {"Content-Type": "application/json"})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def inversions(order: list[int]) -> int:
    """Pairs out of order (merge sort count, O(n log n))."""
    if len(order) < 2:
        return 0
    mid = len(order) // 2
    left, right = order[:mid], order[mid:]
    count = inversions(left) + inversions(right)
    left.sort()
    right.sort()
    j = 0
    for value in left:
        while j < len(right) and right[j] < value:
            j += 1
        count += j
    return count


def standalone(args: argparse.Namespace) -> dict[str, object]:
    """Own sandbox subprocess, one class, `--n` requests, measured from its stamps."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "aimharder_sandbox", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        opens = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
        cls = {"class_id": "1", "day": DAY, "opens_at": opens.isoformat(), "capacity": args.n}
        admin(url, "POST", "/_sandbox/classes", cls)
        bookings = spread(["1"], args.n)
        start_ns = int(opens.timestamp()) * 1_000_000_000
        sender = fire(url, bookings, start_ns, args.mode, args.stagger_ms)
        arrivals = admin(url, "GET", "/_sandbox/arrivals")
        assert isinstance(arrivals, list)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    rank = {b.user: i for i, b in enumerate(bookings)}
    late = sorted(
        (a["at_ns"] - start_ns) / 1e6 - rank[a["user"]] * args.stagger_ms for a in arrivals
    )
    order = [rank[a["user"]] for a in sorted(arrivals, key=lambda a: a["at_ns"])]
    return {
        "n": args.n,
        "mode": args.mode,
        "stagger_ms": args.stagger_ms,
        "arrived": len(arrivals),
        "p50_ms": round(statistics.median(late), 3),
        "p99_ms": round(late[min(len(late) - 1, round(0.99 * (len(late) - 1)))], 3),
        "max_ms": round(late[-1], 3),
        "fifo_inversions": inversions(order),
        "sender": sender,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def gym_offset_ns(state: dict[str, object]) -> int:
    """How far ahead of ours an ideal sender must take the gym's clock so as never to arrive
    early by it: the sandbox's offset minus its jitter (`/_sandbox/state` "clock": offset_ms,
    jitter_ms; 0 when it reports none). A sender aims at opening - this, on our clock."""
    clock = state.get("clock")
    if not isinstance(clock, dict):
        return 0
    offset = float(clock.get("offset_ms") or 0) - float(clock.get("jitter_ms") or 0)
    return round(offset * 1_000_000)


def into_running(args: argparse.Namespace) -> dict[str, object]:
    """Connect first, then define the classes opening at the next whole second at least 0.5 s
    ahead (so connecting never eats into the lead), then fire at that opening as the sandbox
    holds it (minus the gym's clock offset)."""
    class_ids = args.classes.split(",")
    bookings = spread(class_ids, args.n)
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    socks = connect(host, port, len(bookings)) if args.mode == "line" else []
    opens = (datetime.now(UTC) + timedelta(seconds=1.5)).replace(microsecond=0)
    for class_id in class_ids:
        size = sum(1 for b in bookings if b.class_id == class_id)
        cls = {"class_id": class_id, "day": DAY, "opens_at": opens.isoformat(), "capacity": size}
        admin(args.url, "POST", "/_sandbox/classes", cls)
    state = admin(args.url, "GET", "/_sandbox/state")
    assert isinstance(state, dict)
    at_ns = min(
        int(c["opens_at_ns"]) for c in state["classes"] if c["class_id"] in set(class_ids)
    ) - gym_offset_ns(state)
    if args.mode == "line":
        sender = fire_line(host, port, bookings, at_ns, socks)
    else:
        sender = fire_threads(host, port, bookings, at_ns, args.stagger_ms)
    return {"n": args.n, "mode": args.mode, "opens_at": opens.isoformat(), "sender": sender}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--mode", choices=("line", "threads"), default="line")
    parser.add_argument("--stagger-ms", type=float, default=0.0, help="threads mode only")
    parser.add_argument("--url", help="fire into this running sandbox instead of starting one")
    parser.add_argument("--classes", help="with --url: comma-separated class ids to define")
    args = parser.parse_args()
    if args.url is None:
        print(json.dumps(standalone(args)))
        return 0
    if not args.classes:
        parser.error("--url needs --classes")
    print(json.dumps(into_running(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
