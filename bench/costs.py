"""Measured unit costs for the capacity model, written to bench/results/costs.json (`make costs`).

Small, fast passes on the current code, each on a fresh stack (a private PostgreSQL database,
the app under gunicorn with the repo's config plus SQL counting, `bench/hooks/
gunicorn_counting.py`, and the AimHarder sandbox in this process):

- `webhook`: N already-due prebookings; N signed deliveries, then the same N again as
  duplicates (as bench/webhook_throughput.py). CPU of the gunicorn processes (/proc, utime +
  stime) and of the database's PostgreSQL backends per delivery, SQL statements, pool
  checkouts and new connections per delivery (SQLAlchemy events), deliveries per second. A
  first delivery is answered `armed` and its prebooking fired by the dispatcher in the
  background: its phase runs until every booking is at the sandbox and the app is idle again,
  so its CPU is the whole prebooking's (arm + fire + record), not the request's alone.
- `crowd`: N prebookings opening at one instant T (in `--crowd-classes` classes); N signed
  deliveries sent ~12 s ahead, as many at once as QStash could. CPU per delivery while they are
  admitted, per prebooking from then to T (prepare), and from T until every booking is in
  (fire, read, record); the pace of the writes at the sandbox's kernel stamps (per shot);
  lateness p50/p99/max; bytes per row of every table afterwards.
- `cron`: N due prebookings booked by legacy cron ticks: ticks until every one is armed
  (a tick arms at most CRON_BATCH_LIMIT; the dispatcher fires them), then the wait for the
  bookings at the sandbox: CPU and statements per booking.
- `create`: N `POST /api/prebookings` with QStash on (qstash_dev): CPU and statements each.
- `qstash`: `bench/cost.py --scenarios create,schedules` (small n): messages and delivery
  attempts per prebooking, schedule messages per day.
- `floor`: `bench/stub_floor.py`: the same machine's floor for a burst at one instant.

Every figure is written with its unit, the command, the date, the git commit and the machine
(cores, CPU, 1-minute load average before and after its pass). Idle CPU and statements of the
app (background threads) are measured first and subtracted. Passes not run keep their entries.

    python bench/costs.py                                  # all passes, ~3 min
    python bench/costs.py --passes crowd --crowd-n 500 --crowd-classes 10 --workers 2
    python bench/costs.py --passes webhook,cron --out /tmp/costs.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from precision_qstash import (  # noqa: E402
    ADMIN_URL,
    API_TOKEN,
    DAY,
    free_port,
    inversions,
    percentile,
    private_database,
    process,
)

from aimharder_sandbox.testing import Sandbox, run_sandbox  # noqa: E402
from flask_app.config import DEV_QSTASH_CURRENT_SIGNING_KEY  # noqa: E402
from qstash_dev.signing import sign  # noqa: E402

PASSES = ("webhook", "crowd", "cron", "create", "qstash", "floor")
EXECUTE_PATH = "/api/qstash/prebooking-execute"
CRON_PATH = "/api/cron/prebooking-scheduler"
CRON_SECRET = "bench-cron"
HOOK = ROOT / "bench" / "hooks" / "gunicorn_counting.py"
TICK_S = os.sysconf("SC_CLK_TCK")


def fire(client: httpx.Client, url: str, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    """Send every body once, signed for `url` as QStash signs; report rate, latency, statuses.

    In-process on purpose: the figures here are the workers' CPU (read from /proc), not the
    client's rate (bench/webhook_throughput.py measures throughput with its own process).
    """
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
        resp = client.post(url, content=body, headers=headers)
        latencies.append((time.perf_counter() - started) * 1000)
        statuses[str(resp.status_code)] = statuses.get(str(resp.status_code), 0) + 1
        try:
            action = str(resp.json().get("action"))
        except ValueError:
            action = "not JSON"
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
        "actions": actions,  # the webhook's answer: armed (first), lost_claim (duplicate), ...
    }


# --- where and on what the figures were taken --------------------------------------------


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def provenance(argv: list[str]) -> dict[str, Any]:
    """The command, commit and machine shared by every entry of this run."""
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    dirty = [
        line
        for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
        if "bench/results/costs.json" not in line
    ]
    return {
        "command": "python bench/costs.py " + " ".join(argv),
        "commit": git("rev-parse", "--short", "HEAD"),
        "commit_dirty": bool(dirty),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": model,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
    }


# --- measuring -----------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """utime + stime of a process (every thread, live or gone), seconds; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK_S


def descendants(pid: int) -> list[int]:
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out += descendants(int(child))
    return out


@dataclass(frozen=True)
class Snap:
    """CPU seconds and SQL counters at one instant."""

    at: float
    app_cpu: float
    db_cpu: float
    statements: int
    checkouts: int
    connects: int
    peak_checked_out: int


@dataclass
class Meter:
    """Samples the app's processes, the database's backends and the workers' SQL counts."""

    app_pid: int
    db_name: str
    count_dir: Path
    backends: dict[int, float] = field(default_factory=dict)
    idle_app: float = 0.0  # cores used while nothing is asked of the app
    idle_db: float = 0.0
    idle_statements: float = 0.0  # per second

    def snap(self) -> Snap:
        app = sum(cpu_s(pid) for pid in descendants(self.app_pid))
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.db_name,)
            ).fetchall()
        for (pid,) in rows:
            self.backends[pid] = max(self.backends.get(pid, 0.0), cpu_s(pid))
        counts = [json.loads(p.read_text()) for p in self.count_dir.glob("*.json")]
        return Snap(
            at=time.monotonic(),
            app_cpu=app,
            db_cpu=sum(self.backends.values()),
            statements=sum(c["statements"] for c in counts),
            checkouts=sum(c["checkouts"] for c in counts),
            connects=sum(c["connects"] for c in counts),
            peak_checked_out=max((c["peak_checked_out"] for c in counts), default=0),
        )

    def calibrate(self, seconds: float = 2.0) -> None:
        """The app's idle CPU and statements per second, subtracted from every phase.

        Starts once the app is quiet and its workers have written their last counts (they
        write every 100 ms), so the tail of the set-up is not taken for idle activity.
        """
        self.quiet(10)
        time.sleep(0.3)
        start = self.snap()
        time.sleep(seconds)
        end = self.snap()
        dt = end.at - start.at
        self.idle_app = (end.app_cpu - start.app_cpu) / dt
        self.idle_db = (end.db_cpu - start.db_cpu) / dt
        self.idle_statements = (end.statements - start.statements) / dt

    def idle(self) -> dict[str, float]:
        """The idle rates subtracted from every phase (for the record)."""
        return {
            "app_cores": round(self.idle_app, 4),
            "db_cores": round(self.idle_db, 4),
            "statements_per_s": round(self.idle_statements, 2),
        }

    def phase(self, start: Snap, end: Snap) -> dict[str, float]:
        """What one phase cost, idle activity removed."""
        dt = end.at - start.at
        return {
            "seconds": dt,
            "app_cpu": max(0.0, end.app_cpu - start.app_cpu - self.idle_app * dt),
            "db_cpu": max(0.0, end.db_cpu - start.db_cpu - self.idle_db * dt),
            "statements": max(0.0, end.statements - start.statements - self.idle_statements * dt),
            "checkouts": end.checkouts - start.checkouts,
            "connects": end.connects - start.connects,
        }

    def quiet(self, timeout_s: float, window_s: float = 0.5) -> Snap:
        """Wait until the app's CPU is back to idle (or timeout); the snapshot then."""
        deadline = time.monotonic() + timeout_s
        previous = self.snap()
        while True:
            time.sleep(window_s)
            current = self.snap()
            rate = (current.app_cpu - previous.app_cpu) / (current.at - previous.at)
            if rate <= self.idle_app + 0.05 or time.monotonic() > deadline:
                return current
            previous = current


# --- the stack -----------------------------------------------------------------------------


@dataclass
class App:
    url: str
    meter: Meter
    sandbox: Sandbox
    db_url: str

    def api(self) -> httpx.Client:
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        return httpx.Client(base_url=self.url, headers=auth, timeout=60)


@contextmanager
def stack(args: argparse.Namespace, **env_overrides: str) -> Iterator[App]:
    """A private database, the sandbox and the app under gunicorn with SQL counting."""
    from cryptography.fernet import Fernet

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ExitStack() as es:
        db_url = es.enter_context(private_database())
        sandbox = es.enter_context(run_sandbox())
        count_dir = Path(es.enter_context(tempfile.TemporaryDirectory(prefix="bench-counts-")))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH", "GUNICORN"))}
        env |= {
            "DATABASE_URL": db_url,
            "QSTASH_ENABLED": "true",
            "QSTASH_ROLLOUT_PERCENT": "0",
            "APP_BASE_URL": url,
            "AIMHARDER_BASE_URL": sandbox.url,
            "API_TOKEN": API_TOKEN,
            "CRON_SECRET": CRON_SECRET,
            "SESSION_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": str(args.workers),
            "GUNICORN_THREADS": str(max(512, args.crowd_n + 100)),
            "BENCH_COUNT_DIR": str(count_dir),
        } | env_overrides
        g_args = [sys.executable, "-m", "gunicorn", "-c", str(HOOK), "wsgi:app"]
        proc = es.enter_context(process(g_args, env, f"{url}/api/health", "costs-gunicorn"))
        meter = Meter(proc.pid, db_url.rsplit("/", 1)[1], count_dir)
        time.sleep(0.5)  # the workers' first count files
        yield App(url, meter, sandbox, db_url)


def store_sessions(api: httpx.Client, emails: list[str]) -> None:
    def put(email: str) -> None:
        body = {"cookies": {"amhrdrauth": f"cookie-{email}"}}
        api.put(f"/api/sessions/{email}", json=body).raise_for_status()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, emails))


def create_all(
    api: httpx.Client, emails: list[str], opens: datetime, class_of: Callable[[int], str]
) -> list[dict[str, Any]]:
    """One prebooking per email, in order (creation order = FIFO rank)."""
    created = []
    for i, email in enumerate(emails):
        body = {
            "user_email": email,
            "available_at": opens.isoformat(),
            "booking_data": {"box": "sandbox", "class_id": class_of(i), "day": DAY},
        }
        resp = api.post("/api/prebookings", json=body)
        resp.raise_for_status()
        created.append(resp.json())
    return created


def delivery(row: dict[str, Any]) -> bytes:
    body = {
        "prebookingId": row["id"],
        "userEmail": row["user_email"],
        "scheduledAt": row["available_at"],
    }
    return json.dumps(body).encode()


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


# --- passes --------------------------------------------------------------------------------


Entry = tuple[str, float, str, str]  # name, value, unit, notes


def pass_webhook(args: argparse.Namespace) -> tuple[list[Entry], dict[str, Any]]:
    n = args.webhook_n
    with stack(args) as app, app.api() as api:
        emails = [f"w{i}@bench.example" for i in range(n)]
        store_sessions(api, emails)
        opened = datetime.now(UTC) - timedelta(seconds=1)
        rows = create_all(api, emails, opened, lambda i: f"w{i}")
        bodies = [delivery(r) for r in rows]
        app.meter.calibrate()
        with httpx.Client(base_url=app.url, timeout=60) as client:
            s0 = app.meter.snap()
            first = fire(client, app.url + EXECUTE_PATH, bodies, args.concurrency)
            wait_for(lambda: len(app.sandbox.bookings()) >= n, 30)
            s1 = app.meter.quiet(10)
            dup = fire(client, app.url + EXECUTE_PATH, bodies, args.concurrency)
            s2 = app.meter.quiet(10)
        a, b = app.meter.phase(s0, s1), app.meter.phase(s1, s2)
        booked = len(app.sandbox.bookings())
    per = "per delivery"
    entries: list[Entry] = [
        ("webhook.first_delivery_cpu_ms", a["app_cpu"] / n * 1000, f"ms app CPU {per}", ""),
        ("webhook.first_delivery_db_cpu_ms", a["db_cpu"] / n * 1000, f"ms DB CPU {per}", ""),
        ("webhook.duplicate_cpu_ms", b["app_cpu"] / n * 1000, f"ms app CPU {per}", ""),
        ("webhook.duplicate_db_cpu_ms", b["db_cpu"] / n * 1000, f"ms DB CPU {per}", ""),
        ("webhook.first_deliveries_per_s", float(first["per_s"]), "deliveries/s", "client on the same CPUs"),  # noqa: E501
        ("webhook.duplicates_per_s", float(dup["per_s"]), "deliveries/s", "client on the same CPUs"),  # noqa: E501
        ("webhook.statements_per_first_delivery", a["statements"] / n, f"SQL statements {per}", ""),  # noqa: E501
        ("webhook.statements_per_duplicate", b["statements"] / n, f"SQL statements {per}", ""),
        ("webhook.checkouts_per_first_delivery", a["checkouts"] / n, f"pool checkouts {per}", ""),
        ("webhook.checkouts_per_duplicate", b["checkouts"] / n, f"pool checkouts {per}", ""),
        ("webhook.peak_connections_per_process", float(s2.peak_checked_out), "connections held at once by one worker", f"concurrency {args.concurrency}"),  # noqa: E501
        ("webhook.connections_opened", float(s2.connects), "new PostgreSQL connections in the pass", ""),  # noqa: E501
    ]  # fmt: skip
    detail = {"first": first, "duplicates": dup, "bookings": booked, "n": n}
    return entries, detail | {"phases": [a, b], "idle": app.meter.idle()}


def row_bytes(conn: psycopg.Connection[Any], table: str) -> float:
    """Bytes one more row adds at scale: heap tuple + line pointer, plus one entry per index.

    Estimated from the rows' own widths (pg_column_size), so that a test-sized table, whose
    size on disk is mostly whole 8 kB pages, does not inflate the figure. B-tree entries:
    8-byte header + 4-byte line pointer + the keys (8-aligned), pages ~90 % full.
    """
    heap = conn.execute(f'SELECT avg(pg_column_size(t.*)) FROM "{table}" t').fetchone()
    total = float(heap[0] if heap and heap[0] else 0) + 4
    indexes = conn.execute(
        "SELECT i.indexrelid, array_agg(a.attname ORDER BY k.ord) FROM pg_index i "
        "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = %s::regclass GROUP BY i.indexrelid",
        (table,),
    ).fetchall()
    for _oid, columns in indexes:
        widths = " + ".join(f'pg_column_size("{c}")' for c in columns)
        key = conn.execute(f'SELECT avg({widths}) FROM "{table}"').fetchone()
        key_bytes = float(key[0] if key and key[0] else 0)
        total += (12 + 8 * -(-key_bytes // 8)) / 0.9
    return total


def table_sizes(db_url: str, prebookings: int) -> list[Entry]:
    """Bytes per row and rows per prebooking, for every table with rows."""
    url = db_url.replace("postgresql+psycopg://", "postgresql://")
    names = {"prebookings": "prebooking", "arrivals": "arrival", "user_sessions": "session"}
    entries: list[Entry] = []
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        for (table,) in tables:
            counted = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            rows = int(counted[0]) if counted else 0
            if not rows or table == "alembic_version":
                continue
            disk = conn.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()
            name = names.get(table, table)
            note = f"{rows} rows; on disk {disk[0] if disk else '?'} bytes (mostly whole pages)"
            entries += [
                (f"db.bytes_per_{name}", row_bytes(conn, table), "bytes per row incl. indexes (estimate at scale)", note),  # noqa: E501
                (f"db.{table}_rows_per_prebooking", rows / prebookings, "rows per prebooking", ""),  # noqa: E501
            ]  # fmt: skip
            if table == "arrivals":
                entries.append(
                    (
                        "db.arrivals_per_prebooking",
                        rows / prebookings,
                        "arrival rows per prebooking",
                        "crowd pass: one delivery each",
                    )
                )  # noqa: E501
    return entries


def pass_crowd(args: argparse.Namespace) -> tuple[list[Entry], dict[str, Any]]:
    n, k = args.crowd_n, args.crowd_classes
    with stack(args) as app, app.api() as api:
        emails = [f"c{i}@bench.example" for i in range(n)]
        store_sessions(api, emails)
        lead_in = 25 + 0.04 * n
        opens = (datetime.now(UTC) + timedelta(seconds=lead_in)).replace(microsecond=0)
        for j in range(k):
            app.sandbox.add_class(f"k{j}", DAY, opens_at=opens, capacity=n)
        rows = create_all(api, emails, opens, lambda i: f"k{i % k}")
        bodies = [delivery(r) for r in reversed(rows)]  # QStash brings the last-created first
        app.meter.calibrate()
        send_at = opens - timedelta(seconds=args.crowd_send_ahead)
        left = (send_at - datetime.now(UTC)).total_seconds()
        if left < 0:
            raise RuntimeError("creating took too long: lower --crowd-n or raise the lead-in")
        time.sleep(left)
        results: dict[str, Any] = {}
        with httpx.Client(
            base_url=app.url, timeout=120, limits=httpx.Limits(max_connections=n)
        ) as client:
            s0 = app.meter.snap()
            sender = threading.Thread(
                target=lambda: results.update(fire(client, app.url + EXECUTE_PATH, bodies, n))
            )
            sender.start()
            until_instant = (opens - datetime.now(UTC)).total_seconds()
            s1 = app.meter.quiet(max(0.5, until_instant - args.prepare_window - 0.5))
            time.sleep(max(0.0, (opens - datetime.now(UTC)).total_seconds() - 0.003))
            s2 = app.meter.snap()  # the instant
            wait_for(lambda: len(app.sandbox.arrivals()) >= n, 30)
            s3 = app.meter.quiet(15)
            sender.join(timeout=120)
        admitted, prepared, fired = (
            app.meter.phase(s0, s1),
            app.meter.phase(s1, s2),
            app.meter.phase(s2, s3),
        )
        arrivals = app.sandbox.arrivals()
        sizes = table_sizes(app.db_url, n)
    t0 = int(opens.timestamp()) * 1_000_000_000
    stamps = sorted(a["at_ns"] for a in arrivals)
    late = [(s - t0) / 1e6 for s in stamps]
    rank = {f"cookie-{e}": i for i, e in enumerate(emails)}
    order = [rank[a["user"]] for a in sorted(arrivals, key=lambda a: a["at_ns"])]
    by_class: dict[str, list[int]] = {}
    for a in sorted(arrivals, key=lambda a: a["at_ns"]):
        by_class.setdefault(a["class_id"], []).append(rank[a["user"]])
    pace = (stamps[-1] - stamps[0]) / 1e6 / (len(stamps) - 1) if len(stamps) > 1 else 0.0
    shots = fired["app_cpu"] / n * 1000
    note = f"{n} in {k} class(es), {args.workers} worker(s)"
    entries: list[Entry] = [
        ("crowd.admission_cpu_ms", admitted["app_cpu"] / n * 1000, "ms app CPU per delivery while admitted", note),  # noqa: E501
        ("crowd.admission_db_cpu_ms", admitted["db_cpu"] / n * 1000, "ms PostgreSQL CPU per delivery while admitted", note),  # noqa: E501
        ("crowd.admission_seconds", admitted["seconds"], "s from the first send to idle", note),
        ("crowd.statements_per_admission", admitted["statements"] / n, "SQL statements per delivery while admitted", note),  # noqa: E501
        ("crowd.prepare_cpu_ms", prepared["app_cpu"] / n * 1000, "ms app CPU per prebooking from admitted to the instant", note),  # noqa: E501
        ("crowd.fire_phase_cpu_ms", shots, "ms app CPU per prebooking from the instant to idle", note),  # noqa: E501
        ("crowd.fire_db_cpu_ms", fired["db_cpu"] / n * 1000, "ms PostgreSQL CPU per prebooking after the instant", note),  # noqa: E501
        ("crowd.statements_per_fire", fired["statements"] / n, "SQL statements per prebooking after the instant", note),  # noqa: E501
        ("crowd.shot_interval_ms", pace, "ms between consecutive arrivals at the box (kernel stamps)", note + "; includes the fire stagger"),  # noqa: E501
        ("crowd.record_cpu_ms", max(0.0, shots - pace), "ms app CPU per prebooking after the instant, less one shot", note),  # noqa: E501
        ("crowd.first_shot_ms", late[0] if late else float("nan"), "ms from the instant to the first arrival", note),  # noqa: E501
        ("crowd.lateness_p50_ms", percentile(late, 50), "ms after the instant at the box", note),
        ("crowd.lateness_p99_ms", percentile(late, 99), "ms after the instant at the box", note),
        ("crowd.lateness_max_ms", late[-1], "ms after the instant at the box", note),
        ("crowd.arrived", float(len(arrivals)), "bookings that reached the box", note),
        ("crowd.early", float(sum(1 for v in late if v < 0)), "arrivals before the instant", note),  # noqa: E501
        ("crowd.fifo_inversions_all", float(inversions(order)), "pairs out of creation order, all classes", note),  # noqa: E501
        ("crowd.fifo_inversions_in_class", float(sum(inversions(v) for v in by_class.values())), "pairs out of creation order inside a class", note),  # noqa: E501
    ]  # fmt: skip
    detail = {"deliveries": results, "n": n, "classes": k, "idle": app.meter.idle()}
    return entries + sizes, detail | {"phases": [admitted, prepared, fired]}


def pass_cron(args: argparse.Namespace) -> tuple[list[Entry], dict[str, Any]]:
    n = args.cron_n
    with stack(args, QSTASH_ENABLED="false") as app, app.api() as api:
        emails = [f"t{i}@bench.example" for i in range(n)]
        store_sessions(api, emails)
        opened = datetime.now(UTC) - timedelta(seconds=1)
        create_all(api, emails, opened, lambda i: f"t{i}")
        app.meter.calibrate()
        headers = {"Authorization": f"Bearer {CRON_SECRET}"}
        ticks: list[dict[str, Any]] = []
        with httpx.Client(base_url=app.url, timeout=120) as client:
            s0 = app.meter.snap()
            # A tick arms (claims) what is due, at most CRON_BATCH_LIMIT, and answers; the
            # dispatcher books them in the background. Tick until all are armed (or a tick finds
            # none due), then wait for the bookings, not for more ticks.
            while sum(int(t.get("claimed") or 0) for t in ticks) < n and len(ticks) < n:
                ticks.append(client.post(CRON_PATH, headers=headers).json())
                if not ticks[-1].get("due"):
                    break
            wait_for(lambda: len(app.sandbox.bookings()) >= n, 60)
            s1 = app.meter.quiet(10)
        cost = app.meter.phase(s0, s1)
        booked = len(app.sandbox.bookings())
    note = f"{booked} booked in {len(ticks)} ticks"
    entries: list[Entry] = [
        ("cron.booking_cpu_ms", cost["app_cpu"] / max(1, booked) * 1000, "ms app CPU per cron-tick booking", note),  # noqa: E501
        ("cron.booking_db_cpu_ms", cost["db_cpu"] / max(1, booked) * 1000, "ms PostgreSQL CPU per cron-tick booking", note),  # noqa: E501
        ("cron.statements_per_booking", cost["statements"] / max(1, booked), "SQL statements per cron-tick booking", note),  # noqa: E501
    ]  # fmt: skip
    detail = {"ticks": len(ticks), "tick_replies": ticks, "booked": booked, "phase": cost}
    return entries, detail | {"idle": app.meter.idle()}


def pass_create(args: argparse.Namespace) -> tuple[list[Entry], dict[str, Any]]:
    n = args.create_n
    q_port = free_port()
    q_url = f"http://127.0.0.1:{q_port}"
    q_env = {k: v for k, v in os.environ.items() if not k.startswith("QSTASH")}
    q_args = [sys.executable, "-m", "qstash_dev", "--port", str(q_port), "--quiet"]
    overrides = {"QSTASH_URL": q_url, "QSTASH_ROLLOUT_PERCENT": "100"}
    with (
        process(q_args, q_env, f"{q_url}/v2/keys", "costs-qstash_dev"),
        stack(args, **overrides) as app,
        app.api() as api,
    ):
        emails = [f"n{i}@bench.example" for i in range(n)]
        store_sessions(api, emails)
        opens = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        app.meter.calibrate()
        s0 = app.meter.snap()
        rows = create_all(api, emails, opens, lambda i: f"n{i % 10}")
        wall = time.monotonic() - s0.at
        time.sleep(2.0)  # an outbox publishes within seconds
        s1 = app.meter.quiet(10)
        cost = app.meter.phase(s0, s1)
    published = sum(1 for r in rows if r.get("qstash_message_id"))
    note = f"{n} creates from one client thread, QStash on (qstash_dev), {published} ids at create"
    entries: list[Entry] = [
        ("create.cpu_ms", cost["app_cpu"] / n * 1000, "ms app CPU per POST /api/prebookings", note),
        ("create.db_cpu_ms", cost["db_cpu"] / n * 1000, "ms PostgreSQL CPU per create", note),
        ("create.statements", cost["statements"] / n, "SQL statements per create", note),
        ("create.per_s", n / wall, "creates/s, one client thread", note),
    ]
    return entries, {"published_at_create": published, "phase": cost, "idle": app.meter.idle()}


def run_json(command: list[str], timeout_s: float) -> Any:
    """Run a bench script; the first JSON document it prints."""
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    start = done.stdout.index("{")
    data, _end = json.JSONDecoder().raw_decode(done.stdout[start:])
    return data


def pass_qstash(args: argparse.Namespace) -> tuple[list[Entry], dict[str, Any]]:
    command = [
        sys.executable,
        "bench/cost.py",
        "--scenarios",
        "create,schedules",
        "--n",
        str(args.qstash_n),
        "--schedule-seconds",
        "12",
    ]
    data = run_json(command, 600)
    by = {r["scenario"]: r for r in data["results"]}
    create, sched = by["create"], by["schedules"]
    note = f"bench/cost.py create n={args.qstash_n}, sandbox 500s at rate 0.05 (retries)"
    entries: list[Entry] = [
        ("qstash.messages_per_prebooking", float(create["messages_per_prebooking"]), "QStash messages per prebooking", note),  # noqa: E501
        ("qstash.attempts_per_prebooking", float(create["attempts_per_prebooking"]), "delivery attempts per prebooking", note),  # noqa: E501
        ("qstash.schedule_messages_per_day", float(sched["per_day_croniter_total"]), "messages/day from the periodic schedules", "croniter over the synced schedules"),  # noqa: E501
        ("qstash.active_schedules", float(len(sched["schedules"])), "active QStash schedules", "tasks sync-schedules"),  # noqa: E501
    ]  # fmt: skip
    return entries, {"command": " ".join(command[1:])}


def pass_floor(args: argparse.Namespace) -> tuple[list[Entry], dict[str, Any]]:
    command = [sys.executable, "bench/stub_floor.py", "--n", str(args.crowd_n)]
    data = run_json(command, 120)
    note = f"{args.crowd_n} raw http.client threads, no app, same instant"
    entries: list[Entry] = [
        ("floor.p50_ms", float(data["p50_ms"]), "ms after the instant at the box", note),
        ("floor.p99_ms", float(data["p99_ms"]), "ms after the instant at the box", note),
        ("floor.max_ms", float(data["max_ms"]), "ms after the instant at the box", note),
    ]
    return entries, data


RUNNERS: dict[str, Callable[[argparse.Namespace], tuple[list[Entry], dict[str, Any]]]] = {
    "webhook": pass_webhook,
    "crowd": pass_crowd,
    "cron": pass_cron,
    "create": pass_create,
    "qstash": pass_qstash,
    "floor": pass_floor,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passes", default=",".join(PASSES))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "costs.json")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers")
    parser.add_argument("--webhook-n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8, help="webhook client threads")
    parser.add_argument("--crowd-n", type=int, default=200)
    parser.add_argument("--crowd-classes", type=int, default=1)
    parser.add_argument("--crowd-send-ahead", type=float, default=12.0, help="s before T")
    parser.add_argument("--prepare-window", type=float, default=2.0, help="s before T")
    parser.add_argument("--cron-n", type=int, default=100)
    parser.add_argument("--create-n", type=int, default=100)
    parser.add_argument("--qstash-n", type=int, default=50)
    args = parser.parse_args(argv)
    chosen = [p.strip() for p in args.passes.split(",") if p.strip()]
    unknown = set(chosen) - set(PASSES)
    if unknown:
        parser.error(f"unknown passes {sorted(unknown)}; choose from {PASSES}")
    shared = provenance(sys.argv[1:] if argv is None else argv)
    doc: dict[str, Any] = {"schema": 1, "entries": {}, "passes": {}}
    if args.out.exists():
        doc = json.loads(args.out.read_text())
    for name in chosen:
        before = os.getloadavg()[0]
        started = datetime.now(UTC)
        entries, detail = RUNNERS[name](args)
        after = os.getloadavg()[0]
        doc["entries"] = {k: v for k, v in doc["entries"].items() if v.get("pass") != name}
        machine = shared["machine"] | {"loadavg_1m_before": before, "loadavg_1m_after": after}
        for key, value, unit, notes in entries:
            doc["entries"][key] = {
                "value": round(value, 4),
                "unit": unit,
                "pass": name,
                "notes": notes,
                "command": shared["command"],
                "measured_at": started.isoformat(timespec="seconds"),
                "commit": shared["commit"],
                "commit_dirty": shared["commit_dirty"],
                "machine": machine,
            }
        doc["passes"][name] = {
            "measured_at": started.isoformat(timespec="seconds"),
            "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
            "loadavg_1m": [before, after],
            "commit": shared["commit"],
            "detail": detail,
        }
        print(f"{name}: {len(entries)} figures, load {before:.2f} -> {after:.2f}", file=sys.stderr)
    doc["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    doc["entries"] = dict(sorted(doc["entries"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
