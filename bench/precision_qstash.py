"""QStash path precision: N prebookings opening at one instant, fired through the real stack.

Starts a private PostgreSQL database (created and dropped), `qstash_dev` (subprocess), the
AimHarder sandbox (in this process, it stamps each booking's arrival in `at_ns`) and the app
under gunicorn (`gunicorn.conf.py`). Creates N prebookings for N users via the API with
QSTASH_ENABLED, all opening at the same whole second ~20 s ahead, and reports the arrival
lateness at the sandbox against `available_at` and against each one's FIFO fire instant,
early arrivals and FIFO inversions (arrival order against creation order).

    python bench/precision_qstash.py --sizes 1,50,200 [--stagger-ms 2] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aimharder_sandbox.testing import Sandbox, run_sandbox  # noqa: E402
from flask_app.dbschema import upgrade  # noqa: E402

ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
API_TOKEN = "bench-token"
DAY = "20261130"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def private_database() -> Iterator[str]:
    """A fresh migrated PostgreSQL database, dropped on exit."""
    name = f"bench_qstash_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def process(
    args: list[str], env: dict[str, str], ready_url: str, log_name: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess that is up once `ready_url` answers; terminated on exit.

    Its output is appended to `bench/.<log_name>.log` (default: the program's name).
    """
    command = args[args.index("--") + 1 :] if "--" in args else args
    name = log_name or Path(command[2] if command[1] == "-m" else command[0]).name
    log = open(ROOT / "bench" / f".{name}.log", "ab")
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(ready_url, timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{args} did not start (see bench logs)") from None
                time.sleep(0.1)
        yield proc
    finally:
        # Under a profiler (`py-spy record -- cmd`) stop the profiled command, not the profiler:
        # py-spy then writes its output and exits by itself.
        target = _children(proc.pid) if args[0].endswith("py-spy") else [proc.pid]
        for pid in target or [proc.pid]:
            with suppress(ProcessLookupError):  # it died first: keep the start-up error
                os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc)."""
    try:
        raw = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in raw.split()]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def inversions(order: list[int]) -> int:
    """Pairs fired out of creation order."""
    return sum(
        1 for i in range(len(order)) for j in range(i + 1, len(order)) if order[i] > order[j]
    )


def create(api: httpx.Client, n: int, class_id: str, opens: datetime) -> list[dict[str, Any]]:
    """N users' sessions and prebookings, created in rank order."""
    users = [f"bench{i}-{class_id}@example.com" for i in range(n)]
    for email in users:
        cookies = {"amhrdrauth": f"cookie-{email}"}
        api.put(f"/api/sessions/{email}", json={"cookies": cookies}).raise_for_status()
    created = []
    for email in users:
        body = {
            "user_email": email,
            "available_at": opens.isoformat(),
            "booking_data": {"box": "sandbox", "class_id": class_id, "day": DAY},
        }
        resp = api.post("/api/prebookings", json=body)
        resp.raise_for_status()
        created.append(resp.json())
    return created


def run_size(
    api: httpx.Client, sandbox: Sandbox, n: int, lead_in_s: float, stagger_ms: float
) -> dict[str, Any]:
    """Create n prebookings opening together; wait for their bookings; measure."""
    class_id = f"c{n}x{uuid.uuid4().hex[:6]}"
    opens = (datetime.now(UTC) + timedelta(seconds=lead_in_s)).replace(microsecond=0)
    sandbox.add_class(class_id, DAY, opens_at=opens, capacity=n)
    created = create(api, n, class_id, opens)
    users = [c["user_email"] for c in created]
    if datetime.now(UTC) > opens - timedelta(seconds=5):
        raise RuntimeError("creating took too long; raise --lead-in")
    published = sum(1 for c in created if c["qstash_message_id"])
    # Stay off the stub until the burst is over: reading its arrivals takes its state lock.
    burst_s = (opens - datetime.now(UTC)).total_seconds() + n * stagger_ms / 1000 + 1
    time.sleep(max(0.0, burst_s))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        arrivals = [a for a in sandbox.arrivals() if a["class_id"] == class_id]
        if len(arrivals) >= n:
            break
        time.sleep(0.2)
    rank = {f"cookie-{email}": i for i, email in enumerate(users)}
    opens_ns = int(opens.timestamp()) * 1_000_000_000
    late = [(a["at_ns"] - opens_ns) / 1e6 for a in arrivals]
    vs_fire = [(a["at_ns"] - opens_ns) / 1e6 - rank[a["user"]] * stagger_ms for a in arrivals]
    order = [rank[a["user"]] for a in sorted(arrivals, key=lambda a: a["at_ns"])]
    rows = final_rows(api, created)
    statuses = [row["status"] for row in rows]
    # Split the lateness: the app's wake-up (sent_at, taken just before the request is written)
    # against the fire instant, and the transit from there to the stub's arrival stamp.
    sent_ns = {
        f"cookie-{row['user_email']}": datetime.fromisoformat(row["result"]["sent_at"]).timestamp()
        * 1e9
        for row in rows
        if row.get("result") and row["result"].get("sent_at")
    }
    wake = [(sent_ns[u] - opens_ns) / 1e6 - rank[u] * stagger_ms for u in sent_ns]
    transit = [(a["at_ns"] - sent_ns[a["user"]]) / 1e6 for a in arrivals if a["user"] in sent_ns]
    return {
        "n": n,
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "published": published,
        "arrived": len(arrivals),
        "completed": statuses.count("completed"),
        "vs_available_at_ms": summary(late),
        "vs_fire_at_ms": summary(vs_fire),
        "app_wake_vs_fire_at_ms": summary(wake),
        "transit_to_stub_ms": summary(transit),
        "stub_connections": sandbox.connections(),
        "early_vs_available_at": sum(1 for v in late if v < 0),
        "early_vs_fire_at": sum(1 for v in vs_fire if v < 0),
        "fifo_inversions": inversions(order),
    }


def final_rows(api: httpx.Client, created: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every prebooking once none is pending or loaded any more (or after 15 s)."""
    deadline = time.monotonic() + 15
    while True:
        rows = [api.get(f"/api/prebookings/{c['id']}").json() for c in created]
        settled = all(row["status"] not in ("pending", "loaded") for row in rows)
        if settled or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(statistics.median(values), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3),
        "min": round(min(values), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,50,200")
    parser.add_argument("--lead-in", type=float, default=20.0, help="seconds to the opening")
    parser.add_argument("--stagger-ms", type=float, default=2.0)
    parser.add_argument("--lead-seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=512)
    args = parser.parse_args()
    python = sys.executable
    qstash_port, app_port = free_port(), free_port()
    from cryptography.fernet import Fernet

    with private_database() as db_url, run_sandbox() as sandbox:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH", "GUNICORN"))}
        q_env = base_env | {"QSTASH_DEV_RETRY_DELAY_SCALE": "1"}
        q_args = [python, "-m", "qstash_dev", "--port", str(qstash_port), "--quiet"]
        app_url = f"http://127.0.0.1:{app_port}"
        app_env = base_env | {
            "DATABASE_URL": db_url,
            "QSTASH_ENABLED": "true",
            "QSTASH_URL": f"http://127.0.0.1:{qstash_port}",
            "APP_BASE_URL": app_url,
            "AIMHARDER_BASE_URL": sandbox.url,
            "API_TOKEN": API_TOKEN,
            "SESSION_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "QSTASH_FIRE_STAGGER_MS": str(args.stagger_ms),
            "QSTASH_LEAD_SECONDS": str(args.lead_seconds),
            "GUNICORN_BIND": f"127.0.0.1:{app_port}",
            "GUNICORN_WORKERS": str(args.workers),
            "GUNICORN_THREADS": str(args.threads),
        }
        g_args = [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
        with (
            process(q_args, q_env, f"http://127.0.0.1:{qstash_port}/v2/keys"),
            process(g_args, app_env, f"{app_url}/api/health"),
            httpx.Client(
                base_url=app_url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
            ) as api,
        ):
            results = [
                run_size(api, sandbox, int(n), args.lead_in, args.stagger_ms)
                for n in args.sizes.split(",")
            ]
    settings = {k: v for k, v in vars(args).items() if k != "sizes"}
    settings["cpus"] = os.cpu_count()
    print(json.dumps({"settings": settings, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
