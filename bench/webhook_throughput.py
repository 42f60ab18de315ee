"""Signed QStash webhook deliveries handled per second, on PostgreSQL, under gunicorn.

The app runs under the repo's gunicorn.conf.py against a private PostgreSQL database and the
AimHarder sandbox. N prebookings, already due, are created through the API (rollout 0 %, so
nothing is published: the deliveries come from this script), each user's cookies stored. Then
N deliveries, each signed as QStash signs them (`qstash_dev.signing.sign` over the exact body
and `APP_BASE_URL + path`), are sent from C concurrent client threads; every one arms its
prebooking (one claim) and is answered at once, and the dispatchers book them all in the
background. Then the same N deliveries are replayed (QStash's at-least-once duplicates): each
must answer 200 `lost_claim` and book nothing. The script then waits (bounded) for the N
bookings to reach the sandbox.

    python bench/webhook_throughput.py [--n 1000] [--concurrency 32] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from precision_qstash import (  # noqa: E402
    API_TOKEN,
    DAY,
    free_port,
    percentile,
    private_database,
    process,
)

from aimharder_sandbox.testing import run_sandbox  # noqa: E402
from flask_app.config import DEV_QSTASH_CURRENT_SIGNING_KEY  # noqa: E402
from qstash_dev.signing import sign  # noqa: E402

PATH = "/api/qstash/prebooking-execute"


def fire(client: httpx.Client, url: str, bodies: list[bytes], concurrency: int) -> dict[str, float]:
    """Send every body once, signed; report rate, latency and statuses."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    actions: dict[str, int] = {}

    def one(body: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            "Upstash-Retried": "0",
            "Upstash-Signature": sign(DEV_QSTASH_CURRENT_SIGNING_KEY, url, body),
        }
        started = time.perf_counter()
        resp = client.post(PATH, content=body, headers=headers)
        latencies.append((time.perf_counter() - started) * 1000)
        statuses[str(resp.status_code)] = statuses.get(str(resp.status_code), 0) + 1
        action = resp.json().get("action", "?")
        actions[action] = actions.get(action, 0) + 1

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, bodies))
    wall = time.perf_counter() - started
    return {
        "deliveries": len(bodies),
        "wall_s": round(wall, 2),
        "per_s": round(len(bodies) / wall, 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "statuses": statuses,
        "actions": actions,
    }  # type: ignore[dict-item]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="sample the app with py-spy (threads holding the GIL) into FILE, collapsed stacks;"
        " summarise with bench/profile_summary.py --under prebooking_execute",
    )
    args = parser.parse_args()
    from cryptography.fernet import Fernet

    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    with private_database() as db_url, run_sandbox() as sandbox:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH", "GUNICORN"))}
        env |= {
            "DATABASE_URL": db_url,
            "QSTASH_ENABLED": "true",
            "QSTASH_ROLLOUT_PERCENT": "0",
            "APP_BASE_URL": app_url,
            "AIMHARDER_BASE_URL": sandbox.url,
            "API_TOKEN": API_TOKEN,
            "SESSION_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": str(args.workers),
        }
        g_args = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
        if args.profile:
            spy = str(Path(sys.executable).with_name("py-spy"))
            spy_args = [spy, "record", "--subprocesses", "--gil", "--nonblocking", "--rate", "200"]
            g_args = [*spy_args, "--format", "raw", "--output", args.profile, "--", *g_args]
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        with (
            process(g_args, env, f"{app_url}/api/health"),
            httpx.Client(
                base_url=app_url, timeout=60, limits=httpx.Limits(max_connections=args.concurrency)
            ) as client,
        ):
            opened = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
            bodies = []
            for i in range(args.n):
                email = f"u{i}@bench.example"
                client.put(
                    f"/api/sessions/{email}",
                    headers=auth,
                    json={"cookies": {"amhrdrauth": f"tok{i}"}},
                ).raise_for_status()
                made = client.post(
                    "/api/prebookings",
                    headers=auth,
                    json={
                        "user_email": email,
                        "available_at": opened,
                        "booking_data": {"box": "sandbox", "class_id": f"c{i}", "day": DAY},
                    },
                )
                made.raise_for_status()
                bodies.append(
                    json.dumps(
                        {
                            "prebookingId": made.json()["id"],
                            "userEmail": email,
                            "scheduledAt": opened,
                        }
                    ).encode()
                )
            first = fire(client, app_url + PATH, bodies, args.concurrency)
            replay = fire(client, app_url + PATH, bodies, args.concurrency)
            deadline = time.monotonic() + 60
            while len(sandbox.bookings()) < args.n and time.monotonic() < deadline:
                time.sleep(0.1)
            booked = len(sandbox.bookings())
    result = {
        "settings": vars(args) | {"cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]},
        "first_deliveries": first,
        "duplicate_deliveries": replay,
        "bookings_at_sandbox": booked,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
