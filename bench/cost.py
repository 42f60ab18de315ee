"""QStash cost per prebooking, end to end: messages QStash creates and the deliveries it makes.

Every scenario runs the real local stack, fresh: a private PostgreSQL database (created,
migrated, dropped), `python -m qstash_dev` (subprocess), the app under gunicorn (the repo's
`gunicorn.conf.py`) and the AimHarder sandbox (in this process), which answers a share of the
bookings (`--error-rate`, seeded) with a transient 500 so that the webhook answers 503 and QStash
retries. Prebookings are created through the API for classes opening at a few instants ~20-40 s
ahead, so every delivery really happens; afterwards the script reads qstash_dev's event log
(`/v2/events`, all pages) and DLQ, the database and the sandbox.

Scenarios (`--scenarios`, comma-separated; all by default):

- `create`: QSTASH_ENABLED, rollout 100 %: the create path publishes (`--n` prebookings).
- `relay`: QSTASH_MAX_DELAY=8 s, so every create skips the publish (beyond the maximum delay);
  the legacy cron tick (`/api/cron/prebooking-scheduler`, pinged every `--tick` s by this script)
  runs the relay, which publishes each prebooking once it comes within reach.
- `backfill`: created with QSTASH_ENABLED=false; the app is restarted with it on and
  `flask --app wsgi migration backfill --min-notice 5` publishes.
- `rollback`: created with QStash on; `flask migration rollback` cancels, then
  `flask migration backfill --min-notice 5` publishes again.
- `down`: QStash unreachable at create (nothing listens on QSTASH_URL, every publish fails);
  then qstash_dev starts on that port and the cron tick's relay publishes.
- `schedules`: `flask --app wsgi tasks sync-schedules` creates the beat schedules in qstash_dev;
  messages per day are computed from their cron expressions (croniter) and measured over
  `--schedule-seconds` with every minute of their cron shortened to a second (60x speed-up).

Messages are attributed to a source by when qstash_dev created them (the phase the script was
in: create, backfill, rollback, relay ticks) or by their schedule id.

    python bench/cost.py                                  # all scenarios: 500 + 4 x 100
    python bench/cost.py --scenarios create --n 500 --error-rate 0.05
    python bench/cost.py --scenarios relay,down --n-other 200 --tick 2
    python bench/cost.py --scenarios schedules --schedule-seconds 60
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from croniter import croniter  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))
from precision_qstash import free_port, private_database, process  # noqa: E402

from aimharder_sandbox.testing import Sandbox, run_sandbox  # noqa: E402
from flask_app.config import DEV_QSTASH_TOKEN  # noqa: E402

API_TOKEN = "bench-token"
CRON_SECRET = "bench-cron"
CRON_PATH = "/api/cron/prebooking-scheduler"
EXECUTE_PATH = "/api/qstash/prebooking-execute"
DAY = "20261130"
SCENARIOS = ("create", "relay", "backfill", "rollback", "down", "schedules")
FINAL = {"DELIVERED", "FAILED", "CANCELED"}
RELAY_MAX_DELAY_S = 8  # relay scenario: publishable only within 8 s (+ the 3 s lead) of opening
SPEEDUP = 60  # schedules scenario: one minute of cron becomes one second


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Stack:
    """One scenario's stack: database, ports, sandbox, and how to start each process."""

    db_url: str
    sandbox: Sandbox
    args: argparse.Namespace
    app_port: int = field(default_factory=free_port)
    qstash_port: int = field(default_factory=free_port)
    session_key: str = ""

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.app_port}"

    @property
    def qstash_url(self) -> str:
        return f"http://127.0.0.1:{self.qstash_port}"

    def env(self, **overrides: str) -> dict[str, str]:
        """The app's environment (also for its CLI commands)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH", "GUNICORN"))}
        return (
            base
            | {
                "DATABASE_URL": self.db_url,
                "QSTASH_ENABLED": "true",
                "QSTASH_ROLLOUT_PERCENT": "100",
                "QSTASH_URL": self.qstash_url,
                "APP_BASE_URL": self.app_url,
                "AIMHARDER_BASE_URL": self.sandbox.url,
                "API_TOKEN": API_TOKEN,
                "CRON_SECRET": CRON_SECRET,
                "SESSION_ENCRYPTION_KEYS": self.session_key,
            }
            | overrides
        )

    def qstash(self) -> Any:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QSTASH")}
        env["QSTASH_DEV_RETRY_DELAY_SCALE"] = "1"  # real retry delays (200, 400, 600 ms)
        args = [sys.executable, "-m", "qstash_dev", "--port", str(self.qstash_port), "--quiet"]
        return process(args, env, f"{self.qstash_url}/v2/keys", "cost-qstash_dev")

    def app(self, **overrides: str) -> Any:
        env = self.env(**overrides) | {
            "GUNICORN_BIND": f"127.0.0.1:{self.app_port}",
            "GUNICORN_WORKERS": "1",
            "GUNICORN_THREADS": str(self.args.threads),
        }
        args = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
        return process(args, env, f"{self.app_url}/api/health", "cost-gunicorn")

    def flask(self, *command: str, **overrides: str) -> str:
        """Run `flask --app wsgi <command>` in a fresh process; its output."""
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", *command],
            cwd=ROOT,
            env=self.env(**overrides),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"flask {' '.join(command)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def api(self) -> httpx.Client:
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        return httpx.Client(base_url=self.app_url, headers=auth, timeout=60)

    def qstash_client(self) -> httpx.Client:
        auth = {"Authorization": f"Bearer {DEV_QSTASH_TOKEN}"}
        return httpx.Client(base_url=self.qstash_url, headers=auth, timeout=60)


# --- phases: what the script was doing when qstash_dev created a message ---------------------


@dataclass
class Phases:
    """Named time windows (unix ms) to attribute CREATED events to a source."""

    spans: list[tuple[str, int, int]] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = now_ms()
        try:
            yield
        finally:
            self.spans.append((name, start, now_ms()))

    def of(self, at_ms: int) -> str:
        for name, start, end in self.spans:
            if start <= at_ms <= end:
                return name
        return "other"


class Ticker:
    """Pings the legacy cron endpoint every `every` s from a thread (a fast cron-job.org).

    Ticks fall on half seconds (k × every + 0.5 s), away from the whole-second openings: a tick
    right after an opening would book, through the cron path, a prebooking whose QStash delivery
    had just been released for a retry (harmless, but the bookings would change path by chance).
    """

    def __init__(self, app_url: str, every: float) -> None:
        self.url = app_url + CRON_PATH
        self.every = every
        self.answers: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cron-ticker", daemon=True)

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {CRON_SECRET}"}
        with httpx.Client(timeout=60) as http:
            while not self._stop.wait(self.every - (time.time() - 0.5) % self.every):
                try:
                    self.answers.append(http.post(self.url, headers=headers).json())
                except (httpx.HTTPError, ValueError) as exc:
                    self.answers.append({"error": type(exc).__name__})

    def summary(self) -> dict[str, Any]:
        keys = ("relayed", "booked", "due", "released", "lost_claim")
        total = {k: sum(int(a.get(k) or 0) for a in self.answers) for k in keys}
        return {"ticks": len(self.answers), **total}


# --- creating prebookings --------------------------------------------------------------------


def store_sessions(api: httpx.Client, users: list[str], clients: int) -> None:
    def put(email: str) -> None:
        body = {"cookies": {"amhrdrauth": f"cookie-{email}"}}
        api.put(f"/api/sessions/{email}", json=body).raise_for_status()

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(put, users))


def instants(args: argparse.Namespace, n: int) -> list[datetime]:
    """`--instants` whole seconds, `--spacing` s apart, the first `lead-in` s from now."""
    lead_in = args.lead_in if args.lead_in is not None else 20 + 0.03 * n
    first = (datetime.now(UTC) + timedelta(seconds=lead_in)).replace(microsecond=0)
    return [first + timedelta(seconds=args.spacing * i) for i in range(args.instants)]


def create_prebookings(
    stack: Stack, api: httpx.Client, scenario: str, n: int
) -> tuple[list[dict[str, Any]], list[datetime]]:
    """n users with a session, one prebooking each, spread over the instants (round robin)."""
    users = [f"cost-{scenario}-{i}@example.com" for i in range(n)]
    store_sessions(api, users, stack.args.clients)
    opens = instants(stack.args, n)
    for j, at in enumerate(opens):
        stack.sandbox.add_class(f"{scenario}-{j}", DAY, opens_at=at, capacity=n)

    def create(i: int) -> dict[str, Any]:
        j = i % len(opens)
        body = {
            "user_email": users[i],
            "available_at": opens[j].isoformat(),
            "booking_data": {"box": "sandbox", "class_id": f"{scenario}-{j}", "day": DAY},
        }
        resp = api.post("/api/prebookings", json=body)
        resp.raise_for_status()
        created: dict[str, Any] = resp.json()
        return created

    with ThreadPoolExecutor(stack.args.clients) as pool:
        rows = list(pool.map(create, range(n)))
    return rows, opens


def check_time(opens: list[datetime], needed_s: float, what: str) -> None:
    """Fail loudly if the first delivery (3 s before opening) is nearer than `needed_s`."""
    left = (opens[0] - datetime.now(UTC)).total_seconds() - 3
    if left < needed_s:
        raise RuntimeError(f"{what} left {left:.1f} s before the first delivery: raise --lead-in")


# --- waiting and reading ---------------------------------------------------------------------


def pg_url(db_url: str) -> str:
    return db_url.replace("postgresql+psycopg://", "postgresql://")


def prebooking_rows(db_url: str) -> list[dict[str, Any]]:
    query = (
        "SELECT id, status, executed_by, qstash_message_id, qstash_generation, qstash_error "
        "FROM prebookings"
    )
    with psycopg.connect(pg_url(db_url)) as conn:
        cur = conn.execute(query)
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def arrival_counts(db_url: str) -> dict[str, int]:
    """The app's own record of arrivals, by path and action."""
    with psycopg.connect(pg_url(db_url)) as conn:
        rows = conn.execute("SELECT path, action, count(*) FROM arrivals GROUP BY 1, 2").fetchall()
    return {f"{path}:{action}": int(count) for path, action, count in sorted(rows)}


def wait_settled(stack: Stack, opens: list[datetime], timeout_s: float = 45) -> None:
    """Until the last window opened and every prebooking is settled (or timeout).

    Settled: none pending or loaded, or none loaded and every prebooking message at QStash
    final (what stays pending then had its message fail into the DLQ: cron's to carry).
    """
    time.sleep(max(0.0, (opens[-1] - datetime.now(UTC)).total_seconds() + 1.5))
    deadline = time.monotonic() + timeout_s
    with stack.qstash_client() as qstash:
        while time.monotonic() < deadline:
            statuses = {row["status"] for row in prebooking_rows(stack.db_url)}
            if not statuses & {"pending", "loaded"}:
                break
            if "loaded" not in statuses and qstash_idle(all_events(qstash)):
                break
            time.sleep(0.5)
    time.sleep(1.0)  # let the last deliveries' events land


def all_events(qstash: httpx.Client) -> list[dict[str, Any]]:
    """Every event qstash_dev logged, oldest first (follows cursors)."""
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"count": 1000}
        if cursor:
            params["cursor"] = cursor
        page = qstash.get("/v2/events", params=params).json()
        events.extend(page["events"])
        cursor = page.get("cursor")
        if not cursor:
            return list(reversed(events))


def dlq_size(qstash: httpx.Client) -> int:
    total, cursor = 0, None
    while True:
        params: dict[str, Any] = {"count": 100}
        if cursor:
            params["cursor"] = cursor
        page = qstash.get("/v2/dlq", params=params).json()
        total += len(page["messages"])
        cursor = page.get("cursor")
        if not cursor:
            return total


def qstash_idle(events: list[dict[str, Any]]) -> bool:
    """Whether every prebooking message in the event log reached a final state."""
    last: dict[str, str] = {}
    for event in events:
        if event.get("url", "").endswith(EXECUTE_PATH):
            last[event["messageId"]] = event["state"]
    return all(state in FINAL for state in last.values())


def wait_qstash_idle(qstash: httpx.Client, timeout_s: float = 15) -> list[dict[str, Any]]:
    """The event log once every prebooking message reached a final state (or timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = all_events(qstash)
        if qstash_idle(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def prebooking_of(event: dict[str, Any]) -> str | None:
    try:
        body = json.loads(base64.b64decode(event.get("body") or ""))
    except ValueError:
        return None
    found = body.get("prebookingId") if isinstance(body, dict) else None
    return str(found) if found else None


def measure(
    scenario: str,
    stack: Stack,
    phases: Phases,
    n: int,
    load_before: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Read qstash_dev, the database and the sandbox; the scenario's figures."""
    with stack.qstash_client() as qstash:
        events = wait_qstash_idle(qstash)
        dlq = dlq_size(qstash)
    kinds: dict[str, str] = {}  # message id -> "prebooking" | "schedule" | "other"
    owner: dict[str, str] = {}  # prebooking message id -> prebooking id
    sources: Counter[str] = Counter()
    for event in events:
        if event["state"] != "CREATED":
            continue
        mid = event["messageId"]
        if event.get("scheduleId"):
            kinds[mid] = "schedule"
            sources[f"schedule {event['scheduleId']}"] += 1
        elif event.get("url", "").endswith(EXECUTE_PATH):
            kinds[mid] = "prebooking"
            owner[mid] = prebooking_of(event) or "?"
            sources[phases.of(int(event["time"]))] += 1
        else:
            kinds[mid] = "other"
            sources["other"] += 1
    states: Counter[str] = Counter(
        e["state"] for e in events if kinds.get(e["messageId"]) == "prebooking"
    )
    per_prebooking = Counter(owner.values())
    attempts = sum(
        1 for e in events if e["state"] == "ACTIVE" and kinds.get(e["messageId"]) == "prebooking"
    )
    rows = prebooking_rows(stack.db_url)
    arrivals = [a for a in stack.sandbox.arrivals() if a["class_id"].startswith(f"{scenario}-")]
    bookings = [b for b in stack.sandbox.bookings() if b["class_id"].startswith(f"{scenario}-")]
    held = Counter((b["user"], b["class_id"], b["day"]) for b in bookings)
    created = sum(1 for kind in kinds.values() if kind == "prebooking")
    return {
        "scenario": scenario,
        "prebookings": n,
        "messages_created": created,
        "messages_per_prebooking": round(created / n, 3) if n else None,
        "messages_per_prebooking_histogram": dict(
            sorted(Counter(per_prebooking[r["id"]] for r in rows).items())
        ),
        "delivery_attempts": attempts,
        "attempts_per_prebooking": round(attempts / n, 3) if n else None,
        "retries": states["RETRY"],
        "delivered": states["DELIVERED"],
        "failed": states["FAILED"],
        "canceled": states["CANCELED"],
        "dlq_entries": dlq,
        "created_by_source": dict(sources),
        "bookings": len(bookings),
        "double_bookings": sum(count - 1 for count in held.values() if count > 1),
        "duplicate_book_requests": sum(
            1 for a in arrivals if a["error_key"] == "NOPUEDESRESERVAMISMAHORA"
        ),
        "sandbox_book_requests": len(arrivals),
        "sandbox_injected_500": sum(1 for a in arrivals if a["status"] == 500),
        "statuses": dict(Counter(r["status"] for r in rows)),
        "executed_by": dict(Counter(str(r["executed_by"]) for r in rows)),
        "app_arrivals": arrival_counts(stack.db_url),
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    } | extra


# --- scenarios -------------------------------------------------------------------------------


def scenario_create(stack: Stack, n: int) -> dict[str, Any]:
    phases, load = Phases(), os.getloadavg()[0]
    with stack.qstash(), stack.app(), stack.api() as api:
        with phases.phase("create"):
            created, opens = create_prebookings(stack, api, "create", n)
        check_time(opens, 0, "creating")
        wait_settled(stack, opens)
        published = sum(1 for c in created if c["qstash_message_id"])
        return measure("create", stack, phases, n, load, {"ids_at_create": published})


def scenario_relay(stack: Stack, n: int) -> dict[str, Any]:
    phases, load = Phases(), os.getloadavg()[0]
    with stack.qstash(), stack.app(QSTASH_MAX_DELAY=str(RELAY_MAX_DELAY_S)), stack.api() as api:
        with phases.phase("create"):
            created, opens = create_prebookings(stack, api, "relay", n)
        check_time(opens, RELAY_MAX_DELAY_S, "creating")
        with phases.phase("relay (cron tick)"), Ticker(stack.app_url, stack.args.tick) as ticker:
            wait_settled(stack, opens)
        published = sum(1 for c in created if c["qstash_message_id"])
        extra = {"ids_at_create": published, "cron_ticks": ticker.summary()}
        return measure("relay", stack, phases, n, load, extra)


def scenario_backfill(stack: Stack, n: int) -> dict[str, Any]:
    phases, load = Phases(), os.getloadavg()[0]
    with stack.qstash():
        with stack.app(QSTASH_ENABLED="false"), stack.api() as api, phases.phase("create"):
            created, opens = create_prebookings(stack, api, "backfill", n)
        with stack.app():  # QStash turned on: restart, then backfill
            with phases.phase("backfill"):
                out = stack.flask("migration", "backfill", "--min-notice", "5")
            check_time(opens, 0, "creating, restarting and backfilling")
            wait_settled(stack, opens)
        published = sum(1 for c in created if c["qstash_message_id"])
        extra = {"ids_at_create": published, "backfill_output": out.strip().splitlines()}
        return measure("backfill", stack, phases, n, load, extra)


def scenario_rollback(stack: Stack, n: int) -> dict[str, Any]:
    phases, load = Phases(), os.getloadavg()[0]
    with stack.qstash(), stack.app(), stack.api() as api:
        with phases.phase("create"):
            created, opens = create_prebookings(stack, api, "rollback", n)
        with phases.phase("rollback"):
            rolled = stack.flask("migration", "rollback")
        with phases.phase("backfill"):
            filled = stack.flask("migration", "backfill", "--min-notice", "5")
        check_time(opens, 0, "creating, rolling back and backfilling")
        wait_settled(stack, opens)
        extra = {
            "ids_at_create": sum(1 for c in created if c["qstash_message_id"]),
            "rollback_output": rolled.strip().splitlines(),
            "backfill_output": filled.strip().splitlines(),
        }
        return measure("rollback", stack, phases, n, load, extra)


def scenario_down(stack: Stack, n: int) -> dict[str, Any]:
    phases, load = Phases(), os.getloadavg()[0]
    with stack.app(), stack.api() as api:  # nothing listens on QSTASH_URL yet
        with phases.phase("create (QStash down)"):
            created, opens = create_prebookings(stack, api, "down", n)
        with stack.qstash():
            check_time(opens, 2, "creating with QStash down")
            with (
                phases.phase("relay (cron tick)"),
                Ticker(stack.app_url, stack.args.tick) as ticker,
            ):
                wait_settled(stack, opens)
            errors = sum(1 for r in prebooking_rows(stack.db_url) if r["qstash_error"])
            extra = {
                "ids_at_create": sum(1 for c in created if c["qstash_message_id"]),
                "publish_errors_left": errors,
                "cron_ticks": ticker.summary(),
            }
            return measure("down", stack, phases, n, load, extra)


def per_day(cron: str, day: datetime) -> int:
    """How many times a cron expression fires in the 24 h from `day` (croniter)."""
    it = croniter(cron, day - timedelta(microseconds=1))
    count, end = 0, day + timedelta(days=1)
    while it.get_next(datetime) < end:
        count += 1
    return count


def sped_up(cron: str) -> str | None:
    """'m * * * *' as '* * * * * m' (croniter's 6th field is seconds): 60x faster."""
    fields = cron.split()
    if len(fields) != 5 or fields[1:] != ["*"] * 4:
        return None
    return "* * * * * " + fields[0]


def scenario_schedules(stack: Stack, seconds: float) -> dict[str, Any]:
    load = os.getloadavg()[0]
    day = datetime(2026, 12, 1, tzinfo=UTC)
    with stack.qstash(), stack.app(), stack.qstash_client() as qstash:
        synced = stack.flask("tasks", "sync-schedules")
        schedules = qstash.get("/v2/schedules").json()
        rows: dict[str, dict[str, Any]] = {}
        for sched in schedules:
            fast = sped_up(sched["cron"])
            rows[sched["scheduleId"]] = {
                "cron": sched["cron"],
                "per_day_croniter": per_day(sched["cron"], day),
                "sped_up_cron": fast,
            }
            if fast is None:
                continue
            headers = {
                f"Upstash-Forward-{k}": v[0]
                for k, v in (sched.get("header") or {}).items()
                if k.lower() != "content-type"
            } | {
                "Upstash-Cron": fast,
                "Upstash-Schedule-Id": sched["scheduleId"],
                "Upstash-Retries": str(sched["retries"]),
                "Content-Type": "application/json",
            }
            dest = sched["destination"]
            qstash.post(f"/v2/schedules/{dest}", content=sched.get("body") or "", headers=headers)
        start = now_ms()
        time.sleep(seconds)
        end = now_ms()
        for sid in rows:
            qstash.delete(f"/v2/schedules/{sid}")
        time.sleep(2)  # let the last deliveries finish
        events = all_events(qstash)
    of_schedule: dict[str, str] = {}
    for event in events:
        if event["state"] == "CREATED" and event.get("scheduleId"):
            if start <= int(event["time"]) < end:
                of_schedule[event["messageId"]] = event["scheduleId"]
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for event in events:
        owner = of_schedule.get(event["messageId"])
        if owner is not None:
            counts[owner][event["state"]] += 1
    simulated_s = (end - start) / 1000 * SPEEDUP
    for sid, row in rows.items():
        made = counts[sid]["CREATED"]
        extrapolated = round(made * 86400 / simulated_s) if row["sped_up_cron"] else None
        row |= {
            "created_in_run": made,
            "delivery_attempts": counts[sid]["ACTIVE"],
            "retries": counts[sid]["RETRY"],
            "failed": counts[sid]["FAILED"],
            "per_day_extrapolated": extrapolated,
        }
    return {
        "scenario": "schedules",
        "run_seconds": round((end - start) / 1000, 1),
        "simulated_minutes": round(simulated_s / 60, 1),
        "schedules": rows,
        "per_day_croniter_total": sum(r["per_day_croniter"] for r in rows.values()),
        "per_day_extrapolated_total": sum(r["per_day_extrapolated"] or 0 for r in rows.values()),
        "sync_output": synced.strip().splitlines(),
        "loadavg_1m_before": round(load, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


# --- report ----------------------------------------------------------------------------------


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| scenario | prebookings | messages created | messages/prebooking | delivery attempts "
        "| attempts/prebooking | retries | failed | bookings | double bookings |"
    )
    lines = [head, "| --- " * 10 + "|"]
    rows = [r for r in results if r["scenario"] != "schedules"]
    if not rows:
        lines = []
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['prebookings']} | {r['messages_created']} "
            f"| {r['messages_per_prebooking']:.2f} | {r['delivery_attempts']} "
            f"| {r['attempts_per_prebooking']:.2f} | {r['retries']} | {r['failed']} "
            f"| {r['bookings']} | {r['double_bookings']} |"
        )
    for r in results:
        if r["scenario"] != "schedules":
            continue
        lines += [
            "",
            f"Beat schedules ({r['run_seconds']} s at {SPEEDUP}x = {r['simulated_minutes']} "
            "simulated minutes):",
            "",
            "| schedule | cron | per day (croniter) | created in run | attempts | failed "
            "| per day (extrapolated) |",
            "| --- " * 7 + "|",
        ]
        for sid, s in r["schedules"].items():
            lines.append(
                f"| {sid} | `{s['cron']}` | {s['per_day_croniter']} | {s['created_in_run']} "
                f"| {s['delivery_attempts']} | {s['failed']} | {s['per_day_extrapolated']} |"
            )
        lines.append(
            f"| total | | {r['per_day_croniter_total']} | | | | {r['per_day_extrapolated_total']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--n", type=int, default=500, help="prebookings of the create scenario")
    parser.add_argument("--n-other", type=int, default=100, help="prebookings of the others")
    parser.add_argument("--error-rate", type=float, default=0.05, help="sandbox 500s per booking")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--instants", type=int, default=5, help="opening instants per scenario")
    parser.add_argument("--spacing", type=float, default=3.0, help="seconds between instants")
    parser.add_argument(
        "--lead-in", type=float, default=None, help="s to the first opening (20 + 0.03 N)"
    )
    parser.add_argument("--tick", type=float, default=2.0, help="s between cron ticks")
    parser.add_argument("--schedule-seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8, help="API client threads")
    parser.add_argument("--threads", type=int, default=512, help="gunicorn threads")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    from cryptography.fernet import Fernet

    results: list[dict[str, Any]] = []
    runners: dict[str, Callable[[Stack], dict[str, Any]]] = {
        "create": lambda s: scenario_create(s, args.n),
        "relay": lambda s: scenario_relay(s, args.n_other),
        "backfill": lambda s: scenario_backfill(s, args.n_other),
        "rollback": lambda s: scenario_rollback(s, args.n_other),
        "down": lambda s: scenario_down(s, args.n_other),
        "schedules": lambda s: scenario_schedules(s, args.schedule_seconds),
    }
    started = datetime.now(UTC)
    with run_sandbox() as sandbox:
        for i, name in enumerate(chosen):
            sandbox.set_fault("error_500", rate=args.error_rate, seed=args.seed + i)
            with ExitStack() as stack_cm:
                db_url = stack_cm.enter_context(private_database())
                stack = Stack(db_url, sandbox, args, session_key=Fernet.generate_key().decode())
                result = runners[name](stack)
            results.append(result)
            print(f"{name}: done at load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    settings = vars(args) | {
        "started": started.isoformat(timespec="seconds"),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
    }
    print(json.dumps({"settings": settings, "results": results}, indent=2, default=str))
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
