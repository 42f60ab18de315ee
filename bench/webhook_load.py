"""Load generator for the QStash webhook: precomputed signed deliveries, sent once each.

Runs in its own process (bench/webhook_throughput.py starts it), so the client's CPU is not
the app's. Reads a JSON-lines file of deliveries (`{"body": str, "signature": str}`: each
signed beforehand exactly as QStash signs it, `qstash_dev.signing.sign`), opens
`--concurrency` keep-alive HTTP/1.1 connections and sends every delivery once over them with
plain asyncio streams (no HTTP library: a Python client library costs more CPU per request
than the app's cheapest answer, which would measure the client). Prints one JSON object:
deliveries, wall time, rate, latency p50/p99 (request written → response read), statuses and
the webhook's `action` counts.

    python bench/webhook_load.py --url http://127.0.0.1:8000 --deliveries d.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

PATH = "/api/qstash/prebooking-execute"


def requests(host: str, lines: list[str]) -> list[bytes]:
    """Every delivery as the exact bytes QStash would write."""
    out = []
    for line in lines:
        item = json.loads(line)
        body = item["body"].encode()
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Upstash-Signature: {item['signature']}\r\nUpstash-Retried: 0\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body, and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection") != "close"


async def worker(
    host: str, port: int, queue: Iterator[bytes], latencies: list[float], seen: Counter[str]
) -> None:
    """One connection: send the next delivery, wait for its answer, repeat."""
    reader, writer = await asyncio.open_connection(host, port)
    for payload in queue:
        started = time.perf_counter()
        writer.write(payload)
        status, body, keep = await read_response(reader)
        latencies.append((time.perf_counter() - started) * 1000)
        seen[f"status {status}"] += 1
        try:
            seen[f"action {json.loads(body).get('action', '?')}"] += 1
        except ValueError:
            seen["action (not JSON)"] += 1
        if not keep:
            writer.close()
            reader, writer = await asyncio.open_connection(host, port)
    writer.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def run(url: str, payloads: list[bytes], concurrency: int) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    seen: Counter[str] = Counter()
    queue = iter(payloads)  # shared: each worker takes the next one
    started = time.perf_counter()
    await asyncio.gather(*(worker(host, port, queue, latencies, seen) for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return {
        "deliveries": len(latencies),
        "wall_s": round(wall, 3),
        "per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(percentile(latencies, 50), 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 2) if latencies else None,
        "answers": dict(seen),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="the app (or the balancer), APP_BASE_URL")
    parser.add_argument("--deliveries", type=Path, required=True, help="JSON lines, signed")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    host = urlsplit(args.url).netloc
    payloads = requests(host, args.deliveries.read_text().splitlines())
    print(json.dumps(asyncio.run(run(args.url, payloads, args.concurrency))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
