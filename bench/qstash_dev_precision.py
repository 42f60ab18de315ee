"""Benchmark: how close to their due time does qstash_dev deliver under load?

Starts `python -m qstash_dev` in a subprocess, publishes (in batches, with the official SDK)
N messages: most due within a few whole seconds (hundreds in the same second), the rest far in
the future so they stay pending, plus some to a destination that answers slowly. A small asyncio
receiver timestamps the first byte of every delivery. Prints lateness (arrival - due) p50, p99,
max and the number of early arrivals. Not a test: nothing here asserts.

    python bench/qstash_dev_precision.py [--messages 2000] [--per-second 500] [--slow 50]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import qstash

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="


class Arrivals(asyncio.Protocol):
    """Minimal HTTP/1.1 receiver: timestamps each request's first byte, answers 200."""

    log: list[tuple[float, str]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""
        self.first: float | None = None

    def data_received(self, data: bytes) -> None:
        if self.first is None:
            self.first = time.time()
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            path = head.split(b" ")[1].decode()
            self.buf = rest[length:]
            assert self.first is not None
            Arrivals.log.append((self.first, path))
            self.first = time.time() if self.buf else None
            delay = 2.0 if path.startswith("/slow") else 0.0
            asyncio.get_running_loop().call_later(delay, self._answer)

    def _answer(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(port: int) -> subprocess.Popen[bytes]:
    """Run qstash_dev in a subprocess and wait until it answers."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "qstash_dev", "--port", str(port), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/v2/keys", params={"qstash_token": TOKEN})
            return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("qstash_dev did not start")


def publish_all(base: str, dest: str, args: argparse.Namespace) -> tuple[int, int]:
    """Publish everything; return (first due second, number expected to arrive)."""
    client = qstash.QStash(TOKEN, base_url=base, retry=False)
    due_seconds = math.ceil((args.messages - args.pending) / args.per_second)
    t0 = int(time.time()) + 3 + args.messages // 1000
    items: list[qstash.message.BatchJsonRequest] = []
    for i in range(args.messages - args.pending):
        nb = t0 + i % due_seconds
        items.append({"url": f"{dest}/m?due={nb}", "body": {"i": i}, "not_before": nb})
    for i in range(args.pending):
        items.append({"url": f"{dest}/far", "body": {"i": i}, "not_before": t0 + 3600})
    for i in range(args.slow):
        items.append({"url": f"{dest}/slow?due={t0}", "body": {"i": i}, "not_before": t0})
    for start in range(0, len(items), 100):
        client.message.batch_json(items[start : start + 100])
    if time.time() > t0:
        raise SystemExit("publishing took longer than the lead time; use fewer messages")
    return t0, args.messages - args.pending + args.slow


async def collect(port: int, expected: int, deadline: float) -> None:
    """Serve the receiver until everything arrived or the deadline passed."""
    gc.disable()  # the measuring instrument must not pause to collect garbage
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Arrivals, "127.0.0.1", port, backlog=4096)
    while len(Arrivals.log) < expected and time.time() < deadline:
        await asyncio.sleep(0.05)
    server.close()


def report(log: list[tuple[float, str]]) -> None:
    """Print lateness statistics."""
    late_ms = sorted((t - int(p.split("due=")[1])) * 1000 for t, p in log if "due=" in p)
    fast = sorted(
        (t - int(p.split("due=")[1])) * 1000 for t, p in log if p.startswith("/m") and "due=" in p
    )
    print(f"deliveries measured: {len(late_ms)} (to the fast destination: {len(fast)})")
    for name, values in (("all", late_ms), ("fast destination only", fast)):
        if not values:
            continue
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        print(
            f"{name}: lateness min {values[0]:.2f} ms, p50 {statistics.median(values):.2f} ms, "
            f"p99 {p99:.2f} ms, max {values[-1]:.2f} ms, early {sum(1 for v in values if v < 0)}"
        )


def report_bursts(log: list[tuple[float, str]]) -> None:
    """Lateness per due second (one burst each) to the fast destination."""
    bursts: dict[int, list[float]] = {}
    for t, p in log:
        if p.startswith("/m") and "due=" in p:
            due = int(p.split("due=")[1])
            bursts.setdefault(due, []).append((t - due) * 1000)
    for n, (_due, values) in enumerate(sorted(bursts.items())):
        values.sort()
        print(
            f"  burst {n + 1} ({len(values)} due at the same ms): min {values[0]:.2f} ms, "
            f"p50 {statistics.median(values):.2f} ms, max {values[-1]:.2f} ms"
        )


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000, help="total published")
    parser.add_argument("--pending", type=int, default=500, help="far-future ones (stay pending)")
    parser.add_argument("--per-second", type=int, default=500, help="due in the same second")
    parser.add_argument("--slow", type=int, default=50, help="extra ones to a 2 s destination")
    args = parser.parse_args()
    port, rport = free_port(), free_port()
    proc = start_server(port)
    try:
        t0, expected = publish_all(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{rport}", args)
        last_due = t0 + math.ceil((args.messages - args.pending) / args.per_second)
        asyncio.run(collect(rport, expected, last_due + 10))
        errors = httpx.get(
            f"http://127.0.0.1:{port}/v2/events",
            params={"qstash_token": TOKEN, "state": "ERROR", "count": 1000},
        ).json()["events"]
        if errors:
            print(f"failed attempts (retried later): {len(errors)}, e.g. {errors[0].get('error')}")
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (1 min)")
    report(Arrivals.log)
    report_bursts(Arrivals.log)


if __name__ == "__main__":
    main()
