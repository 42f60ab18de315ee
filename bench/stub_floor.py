"""The floor under the QStash path benchmark: N raw bookings fired at the sandbox at once.

No app, no database, no QStash: N threads, each with its own warm keep-alive connection
(http.client), send `/api/book` at the same instant (or `--stagger-ms` apart, in order). The
sandbox runs in a separate process. Shows how fast this machine and the Python stub absorb a
burst, i.e. the best lateness any client could get.

    python bench/stub_floor.py --n 200 --stagger-ms 0
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--stagger-ms", type=float, default=0.0)
    args = parser.parse_args()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aimharder_sandbox", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        opens = datetime.now(UTC).replace(microsecond=0).isoformat()
        admin = http.client.HTTPConnection("127.0.0.1", port)
        cls = {"id": "1", "day": "20261130", "opens_at": opens, "capacity": args.n}
        admin.request(
            "POST", "/_sandbox/classes", json.dumps(cls), {"Content-Type": "application/json"}
        )
        admin.getresponse().read()
        conns = []
        for _ in range(args.n):
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request("HEAD", "/")
            conn.getresponse().read()
            conns.append(conn)
        start_ns = time.time_ns() + 1_000_000_000
        body = "id=1&day=20261130&insist=0&familyId="

        def fire(i: int, conn: http.client.HTTPConnection) -> None:
            target = start_ns + int(i * args.stagger_ms * 1e6)
            while (left := target - time.time_ns()) > 0:
                time.sleep(min(left / 1e9, 0.0002) if left < 3_000_000 else left / 1e9 - 0.003)
            headers = {
                "Cookie": f"amhrdrauth=u{i}",
                "Content-Type": "application/x-www-form-urlencoded",
            }
            conn.request("POST", "/api/book", body, headers)
            conn.getresponse().read()

        threads = [threading.Thread(target=fire, args=(i, c)) for i, c in enumerate(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        admin.request("GET", "/_sandbox/arrivals")
        arrivals = json.loads(admin.getresponse().read())
        arrivals = arrivals.get("arrivals", arrivals) if isinstance(arrivals, dict) else arrivals
        rank = {f"u{i}": i for i in range(args.n)}
        late = sorted(
            (a["at_ns"] - start_ns) / 1e6 - rank[a["user"]] * args.stagger_ms for a in arrivals
        )
        order = [rank[a["user"]] for a in sorted(arrivals, key=lambda a: a["at_ns"])]
        inv = sum(
            1 for i in range(len(order)) for j in range(i + 1, len(order)) if order[i] > order[j]
        )
        print(
            json.dumps(
                {
                    "n": args.n,
                    "stagger_ms": args.stagger_ms,
                    "arrived": len(arrivals),
                    "p50_ms": round(statistics.median(late), 3),
                    "p99_ms": round(late[min(len(late) - 1, round(0.99 * (len(late) - 1)))], 3),
                    "max_ms": round(late[-1], 3),
                    "fifo_inversions": inv,
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
            )
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
