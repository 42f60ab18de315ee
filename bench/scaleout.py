"""Crowds at scale (issue 14): N prebookings opening at one instant, through real processes.

Starts, for each invocation, with real parts only:

- a private database: PostgreSQL on 127.0.0.1:5432 (created, migrated, dropped after) or a
  SQLite file in a temporary folder (`--db sqlite`);
- `python -m qstash_dev --port <free>` and `python -m aimharder_sandbox --port <free>` (it
  stamps each `/api/book` with the kernel's receive time, `SO_TIMESTAMPNS`);
- `--instances` app instances, each a gunicorn master (the repo's gunicorn.conf.py) with
  `--workers` workers on its own port;
- HAProxy from Debian's packages in front of them (scripts/ensure-haproxy.sh installs it),
  `APP_BASE_URL` = the balancer, so QStash's deliveries are balanced across the instances.

Then, per run: stores one session per user (`PUT /api/sessions/<email>`), picks an opening
instant far enough ahead for QStash's whole-second scheduling plus the crowd lead (the app's
own `PublishPolicy.lead_for`) plus `--lead-in`, creates the prebookings through the API
(`POST /api/prebookings`, FIFO rank inside a class = `created_at`, then id, as returned),
sleeps through the opening, and reads the sandbox. After the app's burst, the same run's
floor: the same number of requests over the same number of classes, fired by an ideal
pre-connected sender (bench/stub_floor.py, its own process) into the same sandbox.

Reported per run (Markdown table on stdout, JSON under bench/results/): lateness p50/p99/max
of each prebooking's first arrival against its class's opening *as the sandbox holds it* (the
gym's clock), the floor's p99 and the ratio, early arrivals, FIFO inversions inside each class,
places (arrived booked before opening + 2 s in a class of as many places as prebookings), how
many were never sent (no arrival by opening + `--grace`), final statuses, load averages.

The gym's clock: `--clock-offset-ms X --clock-jitter-ms J` start the sandbox with that clock
(`python -m aimharder_sandbox --clock-offset-ms X --clock-jitter-ms J`: the gym's clock reads
ours + X ± J per request; negative X = the gym is behind). The sandbox decides "too early" (-12)
by its clock and records, for each arrival, the kernel stamp (`at_ns`, ours) and what its clock
read then (`gym_at_ns`); every figure here is taken in the gym's clock (`gym_at_ns` against the
class's `opens_at_ns`, which the sandbox holds in its clock), so "early" means early for the
gym. Also reported: the -12 too-early answers (`too_early_answers`, and how many members got
one), the lateness of each member's first *accepted* arrival (after any -12 re-send), and the
lateness on our clock against the opening moved by the offset (the jitter taken out).

    python bench/scaleout.py --scenario one-class-200
    python bench/scaleout.py --scenario twenty-classes-1000 --runs 3
    python bench/scaleout.py --scenario scaleout-5000
    python bench/scaleout.py --scenario legacy-overlap
    python bench/scaleout.py --scenario one-class-200 --smoke       # 20, 1 instance, 2 workers
    python bench/scaleout.py --scenario scaleout-5000 --n 1000 --classes 20 --db sqlite
    python bench/scaleout.py --scenario one-class-200 --instances 1 --workers 2 \
        --clock-offset-ms -20 --clock-jitter-ms 2                    # the gym 20 ms behind
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from precision_qstash import (  # noqa: E402
    API_TOKEN,
    DAY,
    free_port,
    percentile,
    private_database,
    process,
)
from stub_floor import inversions  # noqa: E402

from flask_app.dbschema import upgrade  # noqa: E402
from flask_app.qstash.planning import PublishPolicy  # noqa: E402

CRON_SECRET = "bench-cron"
CRON_PATH = "/api/cron/prebooking-scheduler"
# gunicorn >= 25 opens a control socket at one per-user path ($HOME/.gunicorn/gunicorn.ctl):
# several masters on one machine (ours, other suites') would take it from each other.
NO_CONTROL = ["--no-control-socket"]
FILL_S = 2.0  # a popular class is full this long after it opens
RESULTS = BENCH / "results"


@dataclass(frozen=True)
class Scenario:
    """One shape of crowd and the stack it runs on."""

    name: str
    n: int
    classes: int
    instances: int
    workers: int
    db: str = "postgresql"
    qstash: bool = True  # QSTASH_ENABLED
    legacy_cron: bool = False  # LEGACY_CRON_ENABLED
    pings: int = 0  # legacy: concurrent POSTs to the cron endpoint at the opening
    lb: bool = False  # through HAProxy even with one instance
    about: str = ""


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("one-class-200", 200, 1, 1, 4, about="200 in one class, 4 workers, PostgreSQL"),
        Scenario("twenty-classes-1000", 1000, 20, 1, 4, about="1,000 across 20 classes"),
        Scenario(
            "scaleout-5000",
            5000,
            100,
            2,
            4,
            lb=True,
            about="5,000 across 100 classes, two instances behind HAProxy",
        ),
        Scenario(
            "legacy-overlap",
            30,
            1,
            1,
            4,
            qstash=False,
            legacy_cron=True,
            pings=4,
            about="legacy path: 30 due, 4 overlapping cron pings, 4 workers",
        ),
    )
}


def smoke(scenario: Scenario) -> Scenario:
    """The tiny version: 20 prebookings, 2 classes at most, 1 instance, 2 workers, via HAProxy."""
    return replace(
        scenario, n=20, classes=min(scenario.classes, 2), instances=1, workers=2, lb=True
    )


# --- the stack --------------------------------------------------------------------------------


@dataclass
class Stack:
    """The running parts and their addresses."""

    app_url: str  # what clients and QStash use: the balancer, or the one instance
    sandbox_url: str
    qstash_url: str
    instance_urls: list[str]
    masters: list[subprocess.Popen[bytes]]
    lb_stats_url: str | None
    settings: dict[str, Any] = field(default_factory=dict)


def ensure_haproxy() -> str:
    """HAProxy's path, installed by the project's script when missing (fails loudly)."""
    subprocess.run([str(ROOT / "scripts" / "ensure-haproxy.sh")], check=True)
    return "haproxy"


def haproxy_config(port: int, stats_port: int, backends: list[str], balance: str) -> str:
    """A foreground HAProxy in HTTP mode: each request balanced over the instances."""
    servers = "\n".join(
        f"    server i{i + 1} {url.removeprefix('http://')} maxconn 5000"
        for i, url in enumerate(backends)
    )
    return f"""global
    maxconn 9000
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 75s
    option http-keep-alive
frontend app
    bind 127.0.0.1:{port}
    default_backend instances
backend instances
    balance {balance}
    http-reuse safe
{servers}
frontend stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats
"""


def lb_counts(stats_url: str | None) -> dict[str, int]:
    """Requests each instance answered, from HAProxy's CSV stats (hrsp_* per server)."""
    if stats_url is None:
        return {}
    text = httpx.get(stats_url + ";csv", timeout=10).text
    header, *rows = [line for line in text.splitlines() if line]
    names = header.lstrip("# ").split(",")
    out = {}
    for row in rows:
        rec = dict(zip(names, row.split(","), strict=False))
        if rec.get("pxname") == "instances" and rec.get("svname", "").startswith("i"):
            codes = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
            out[rec["svname"]] = sum(int(rec.get(c) or 0) for c in codes)
    return out


def pool_settings(processes: int, budget: int) -> dict[str, str]:
    """DB_POOL_SIZE/DB_MAX_OVERFLOW so that all app processes together stay under `budget`
    PostgreSQL connections (the server allows 100 and other suites share it); the app's own
    defaults (10 + 10) when they fit."""
    per_process = budget // max(1, processes)
    if per_process >= 20:
        return {}
    pool = max(1, per_process // 2 + per_process % 2)
    return {"DB_POOL_SIZE": str(pool), "DB_MAX_OVERFLOW": str(max(0, per_process - pool))}


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A private migrated database for this invocation (dropped or deleted after)."""
    if kind == "postgresql":
        with private_database() as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as folder:
        url = f"sqlite:///{folder}/bench.db"
        upgrade(url)
        yield url


def app_environment(
    scenario: Scenario, args: argparse.Namespace, base: dict[str, str], urls: dict[str, str]
) -> dict[str, str]:
    """What every instance runs with: one database, one QStash, one sandbox, one session key,
    APP_BASE_URL = the balancer (or the one instance), the pool inside the PostgreSQL budget."""
    from cryptography.fernet import Fernet

    processes = scenario.instances * scenario.workers
    pools = pool_settings(processes, args.pg_budget) if scenario.db == "postgresql" else {}
    env = base | {
        "DATABASE_URL": urls["database"],
        "QSTASH_ENABLED": str(scenario.qstash).lower(),
        "LEGACY_CRON_ENABLED": str(scenario.legacy_cron).lower(),
        "CRON_SECRET": CRON_SECRET,
        "QSTASH_URL": urls["qstash"],
        "APP_BASE_URL": urls["app"],
        "AIMHARDER_BASE_URL": urls["sandbox"],
        "API_TOKEN": API_TOKEN,
        "SESSION_ENCRYPTION_KEYS": Fernet.generate_key().decode(),  # one key for all
        "GUNICORN_WORKERS": str(scenario.workers),
        **pools,
    }
    if args.threads:
        env["GUNICORN_THREADS"] = str(args.threads)
    return env | dict(kv.split("=", 1) for kv in args.app_env)


@contextmanager
def balancer(
    base_env: dict[str, str], port: int, backends: list[str], balance: str
) -> Iterator[str]:
    """HAProxy in the foreground with a generated configuration; yields its stats URL."""
    stats_port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-haproxy-") as folder:
        config = Path(folder) / "haproxy.cfg"
        config.write_text(haproxy_config(port, stats_port, backends, balance))
        h_args = [ensure_haproxy(), "-f", str(config), "-db"]
        stats_url = f"http://127.0.0.1:{stats_port}/stats"
        with process(h_args, base_env, stats_url, "scaleout-haproxy"):
            yield stats_url


@contextmanager
def stack(scenario: Scenario, args: argparse.Namespace) -> Iterator[Stack]:
    """Everything up (database, QStash, sandbox, instances, balancer); all stopped after."""
    python = sys.executable
    auto = scenario.lb or scenario.instances > 1
    use_lb = auto if args.lb == "auto" else args.lb == "on"
    qstash_port, sandbox_port, lb_port = (free_port() for _ in range(3))
    ports = [free_port() for _ in range(scenario.instances)]
    instance_urls = [f"http://127.0.0.1:{p}" for p in ports]
    urls = {
        "app": f"http://127.0.0.1:{lb_port}" if use_lb else instance_urls[0],
        "qstash": f"http://127.0.0.1:{qstash_port}",
        "sandbox": f"http://127.0.0.1:{sandbox_port}",
    }
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH", "GUNICORN"))}
    # The gym's clock (the sandbox's); scripts sharing this stack without the options get ours.
    gym = {
        "offset_ms": getattr(args, "clock_offset_ms", 0.0),
        "jitter_ms": getattr(args, "clock_jitter_ms", 0.0),
        "seed": getattr(args, "clock_seed", None),
    }
    with ExitStack() as parts:
        urls["database"] = parts.enter_context(database(scenario.db))
        q_args = [python, "-m", "qstash_dev", "--port", str(qstash_port), "--quiet"]
        ready = f"{urls['qstash']}/v2/keys"
        parts.enter_context(process(q_args, base_env, ready, "scaleout-qstash"))
        s_args = [python, "-m", "aimharder_sandbox", "--port", str(sandbox_port)]
        s_args += ["--clock-offset-ms", str(gym["offset_ms"])]
        s_args += ["--clock-jitter-ms", str(gym["jitter_ms"])]
        if gym["seed"] is not None:
            s_args += ["--clock-seed", str(gym["seed"])]
        ready = f"{urls['sandbox']}/_sandbox/state"
        parts.enter_context(process(s_args, base_env, ready, "scaleout-sandbox"))
        app_env = app_environment(scenario, args, base_env, urls)
        masters = []
        for i, (port, url) in enumerate(zip(ports, instance_urls, strict=True)):
            g_args = [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", *NO_CONTROL, "wsgi:app"]
            env = app_env | {"GUNICORN_BIND": f"127.0.0.1:{port}"}
            name = f"scaleout-gunicorn-{i + 1}"
            masters.append(parts.enter_context(process(g_args, env, f"{url}/api/health", name)))
        stats_url = None
        if use_lb:
            stats_url = parts.enter_context(
                balancer(base_env, lb_port, instance_urls, args.balance)
            )
        pools = {k: app_env[k] for k in ("DB_POOL_SIZE", "DB_MAX_OVERFLOW") if k in app_env}
        settings = {
            "db": scenario.db,
            "instances": scenario.instances,
            "workers": scenario.workers,
            "threads": args.threads or "gunicorn.conf.py default",
            "load_balancer": "haproxy " + args.balance if use_lb else None,
            "pg_pool": pools or "app defaults",
            "gym_clock": gym,
            "app_env": {k: app_env[k] for k in ("QSTASH_ENABLED", "LEGACY_CRON_ENABLED")}
            | dict(kv.split("=", 1) for kv in args.app_env),
        }
        yield Stack(
            urls["app"],
            urls["sandbox"],
            urls["qstash"],
            instance_urls,
            masters,
            stats_url,
            settings,
        )


# --- the sandbox, seen from outside ---------------------------------------------------------


class SandboxView:
    """The sandbox through its admin API: classes, their openings, arrivals."""

    def __init__(self, url: str) -> None:
        self.url = url

    def add_class(self, class_id: str, opens: datetime, capacity: int) -> None:
        body = {"class_id": class_id, "day": DAY, "opens_at": opens.isoformat()}
        resp = httpx.post(f"{self.url}/_sandbox/classes", json=body | {"capacity": capacity})
        resp.raise_for_status()

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = httpx.get(f"{self.url}/_sandbox/state", timeout=60).json()
        return state

    def openings_ns(self, class_ids: set[str]) -> dict[str, int]:
        """Each class's opening as the sandbox judges it (the gym's clock), epoch ns."""
        return {
            c["class_id"]: int(c["opens_at_ns"])
            for c in self.state()["classes"]
            if c["class_id"] in class_ids and c["opens_at_ns"] is not None
        }

    def clock(self) -> dict[str, Any]:
        """The gym's clock settings as the sandbox holds them (offset_ms, jitter_ms, seed)."""
        clock: dict[str, Any] = httpx.get(f"{self.url}/_sandbox/clock", timeout=60).json()
        return clock

    def offset_ns(self) -> int:
        return round(float(self.clock().get("offset_ms") or 0) * 1e6)

    def arrivals(self, class_ids: set[str]) -> list[dict[str, Any]]:
        rows = httpx.get(f"{self.url}/_sandbox/arrivals", timeout=120).json()
        return [a for a in rows if a["class_id"] in class_ids]


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Created:
    """One prebooking as the API returned it."""

    id: str
    class_id: str
    email: str
    created_at: str
    rank: int = -1  # inside its class, by (created_at, id)

    @property
    def cookie(self) -> str:
        return f"ck-{self.email}"


def plan(scenario: Scenario, tag: str) -> list[tuple[str, str]]:
    """(class id, user email) for every prebooking, classes filled in turn."""
    class_ids = [f"{tag}c{k}" for k in range(scenario.classes)]
    return [(class_ids[i % len(class_ids)], f"{tag}u{i}@bench.example") for i in range(scenario.n)]


def put_sessions(api: httpx.Client, emails: list[str], threads: int) -> None:
    """Store each user's cookies (one session per user)."""

    def one(email: str) -> None:
        cookies = {"amhrdrauth": f"ck-{email}"}
        api.put(f"/api/sessions/{email}", json={"cookies": cookies}).raise_for_status()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, emails))


def create_rate(api: httpx.Client, wanted: list[tuple[str, str]], threads: int) -> float:
    """Creates per second, measured on a probe: up to 50 of the run's users get a prebooking in
    throw-away classes opening a day ahead (published like any other, firing long after the
    run), created the way the run creates, then cancelled. Creation must end before the first
    QStash message of the crowd is due, so the opening is placed from this rate."""
    probe = [(f"probe{i % threads}-{c}", email) for i, (c, email) in enumerate(wanted[:50])]
    started = time.monotonic()
    made, _ = create_all(api, probe, datetime.now(UTC) + timedelta(days=1), threads)
    rate = len(probe) / max(1e-3, time.monotonic() - started)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda c: api.delete(f"/api/prebookings/{c.id}"), made))
    return rate


def create_all(
    api: httpx.Client, wanted: list[tuple[str, str]], opens: datetime, threads: int
) -> tuple[list[Created], list[str]]:
    """Create the prebookings; each class's in sequence (its FIFO order), classes in parallel.

    A create the API did not answer with 201 (or not in time) is not retried: it is returned
    as a failure (its outcome unknown to us; the run reports how many), the rest go on.
    """
    by_class: dict[str, list[str]] = {}
    for class_id, email in wanted:
        by_class.setdefault(class_id, []).append(email)

    def one_class(class_id: str) -> tuple[list[Created], list[str]]:
        made, failed = [], []
        for email in by_class[class_id]:
            body = {
                "user_email": email,
                "available_at": opens.isoformat(),
                "booking_data": {"box": "sandbox", "class_id": class_id, "day": DAY},
            }
            try:
                resp = api.post("/api/prebookings", json=body)
            except httpx.HTTPError as exc:
                failed.append(f"{type(exc).__name__}")
                continue
            if resp.status_code != 201:
                failed.append(f"HTTP {resp.status_code}")
                continue
            row = resp.json()
            made.append(Created(row["id"], class_id, email, row["created_at"]))
        return made, failed

    with ThreadPoolExecutor(threads) as pool:
        chunks = list(pool.map(one_class, list(by_class)))
    created = [c for made, _ in chunks for c in made]
    for members in by_class_of(created).values():
        for rank, c in enumerate(sorted(members, key=lambda c: (c.created_at, c.id))):
            c.rank = rank
    return created, [f for _, failed in chunks for f in failed]


def by_class_of(created: list[Created]) -> dict[str, list[Created]]:
    out: dict[str, list[Created]] = {}
    for c in created:
        out.setdefault(c.class_id, []).append(c)
    return out


def crowd_lead_s(n: int, env: dict[str, str]) -> float:
    """How long before the opening the app's last crowd member's message is due: the app's own
    `PublishPolicy.lead_for` with the settings the instances run with."""
    policy = PublishPolicy(
        app_base_url="http://bench",
        lead=timedelta(seconds=float(env.get("QSTASH_LEAD_SECONDS", 3.0))),
        crowd_lead=timedelta(milliseconds=float(env.get("QSTASH_CROWD_LEAD_MS", 10.0))),
        max_lead=timedelta(seconds=float(env.get("QSTASH_MAX_LEAD_SECONDS", 60.0))),
    )
    return policy.lead_for(max(0, n - 1)).total_seconds()


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def ping_cron(app_url: str, count: int, at: datetime, spread_ms: float) -> list[dict[str, Any]]:
    """`count` concurrent POSTs to the cron endpoint, the i-th at `at + i × spread`."""
    replies: list[dict[str, Any]] = [{} for _ in range(count)]

    def one(i: int) -> None:
        sleep_until(at + timedelta(milliseconds=i * spread_ms))
        resp = httpx.post(
            app_url + CRON_PATH, headers={"Authorization": f"Bearer {CRON_SECRET}"}, timeout=120
        )
        replies[i] = {"status": resp.status_code} | resp.json()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return replies


def wait_for_arrivals(
    sandbox: SandboxView, class_ids: set[str], users: int, opens: datetime, grace_s: float
) -> list[dict[str, Any]]:
    """Stay off the sandbox during the burst, then poll until every user arrived or grace."""
    sleep_until(opens + timedelta(seconds=FILL_S + 0.5))
    deadline = opens + timedelta(seconds=grace_s)
    while True:
        arrivals = sandbox.arrivals(class_ids)
        if len({(a["class_id"], a["user"]) for a in arrivals}) >= users:
            return arrivals
        if datetime.now(UTC) >= deadline:
            return arrivals
        time.sleep(0.5)


TOO_EARLY_KEYS = ("ERROR_ANTELACION_CLIENTE",)  # and ..._HORAS: the -12 "too early" answers


def gym_ns(arrival: dict[str, Any]) -> int:
    """When the arrival came in by the gym's clock (the sandbox's `gym_at_ns`; its kernel stamp
    when the sandbox records none, i.e. no clock offset)."""
    stamp = arrival.get("gym_at_ns")
    return int(stamp) if stamp is not None else int(arrival["at_ns"])


def too_early(arrival: dict[str, Any]) -> bool:
    """A -12 answer for the window (not -12 "already booked at that time")."""
    key = arrival.get("error_key")
    return arrival.get("book_state") == -12 and (key is None or key.startswith(TOO_EARLY_KEYS))


def measure(
    members: dict[str, list[str]],
    arrivals: list[dict[str, Any]],
    openings: dict[str, int],
    offset_ns: int = 0,
) -> dict[str, Any]:
    """From the sandbox's stamps: each member's first arrival (by the kernel stamp) and its
    lateness against its class's opening *by the gym's clock* (`gym_at_ns`), early, inversions
    inside each class (by kernel stamps: the order the box received them; the gym clock's
    per-request jitter must not reorder them), places by opening + FILL_S, never sent; the -12
    too-early answers; the first *accepted* arrival of each member (after any re-send): its
    lateness and the inversions among those (who got in first); and the first arrival's
    lateness on our clock against opening - `offset_ns` (the gym's fixed offset, jitter out).

    `members`: class id -> its users' cookies in FIFO rank order.
    """
    known = {(c, u) for c, us in members.items() for u in us}
    first: dict[tuple[str, str], dict[str, Any]] = {}
    accepted: dict[tuple[str, str], dict[str, Any]] = {}
    placed: set[tuple[str, str]] = set()
    refused_early: Counter[tuple[str, str]] = Counter()
    for a in arrivals:
        key = (a["class_id"], a["user"])
        if key not in known:
            continue
        if key not in first or a["at_ns"] < first[key]["at_ns"]:
            first[key] = a
        if too_early(a):
            refused_early[key] += 1
        elif a.get("book_state") in (0, 1):
            if key not in accepted or a["at_ns"] < accepted[key]["at_ns"]:
                accepted[key] = a
        if a["book_state"] == 1 and gym_ns(a) <= openings[a["class_id"]] + int(FILL_S * 1e9):
            placed.add(key)
    late: list[float] = []
    late_ours: list[float] = []
    late_ok: list[float] = []
    inv = classes_inverted = inv_ok = never = 0
    for class_id, users in members.items():
        opening = openings[class_id]
        mine = [(r, first[(class_id, u)]) for r, u in enumerate(users) if (class_id, u) in first]
        ok = [
            (r, accepted[(class_id, u)]) for r, u in enumerate(users) if (class_id, u) in accepted
        ]
        never += len(users) - len(mine)
        late += [(gym_ns(a) - opening) / 1e6 for _, a in mine]
        late_ours += [(int(a["at_ns"]) - (opening - offset_ns)) / 1e6 for _, a in mine]
        late_ok += [(gym_ns(a) - opening) / 1e6 for _, a in ok]
        class_inv = inversions([r for _, r in sorted((a["at_ns"], r) for r, a in mine)])
        inv += class_inv
        classes_inverted += class_inv > 0
        inv_ok += inversions([r for _, r in sorted((a["at_ns"], r) for r, a in ok)])
    return {
        "prebookings": len(known),
        "sent": len(first),
        "never_sent": never,
        "early": sum(1 for v in late if v < 0),
        "too_early_answers": sum(refused_early.values()),
        "members_refused_early": len(refused_early),
        "extra_arrivals": sum(1 for a in arrivals if (a["class_id"], a["user"]) in known)
        - len(first),
        "lateness_ms": summary(late),
        "accepted_lateness_ms": summary(late_ok),
        "accepted_fifo_inversions": inv_ok,
        "our_clock_lateness_ms": summary(late_ours),
        "fifo_inversions": inv,
        "classes_with_inversions": classes_inverted,
        "got_place": len(placed),
    }


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(percentile(values, 50), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3),
        "min": round(min(values), 3),
    }


def run_floor(sandbox: SandboxView, tag: str, sizes: list[int], mode: str) -> dict[str, Any]:
    """The same shape of burst from an ideal pre-connected sender (stub_floor.py, its own
    process), into the same sandbox, at the next whole second once it is connected; measured
    the same way (against each floor class's opening as the sandbox holds it)."""
    n = sum(sizes)
    class_ids = [f"{tag}f{k}" for k in range(len(sizes))]
    done = subprocess.run(
        [sys.executable, str(BENCH / "stub_floor.py"), "--url", sandbox.url, "--n", str(n)]
        + ["--classes", ",".join(class_ids), "--mode", mode],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:  # keep the app's figures of this run: report the floor as failed
        print(f"warning: the floor failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return {"mode": mode, "failed": done.stderr[-2000:], "lateness_ms": {}}
    report = json.loads(done.stdout.splitlines()[-1])
    members = {
        c: [f"floor-{c}-{i}" for i in range(size)] for c, size in zip(class_ids, sizes, strict=True)
    }
    opens = datetime.fromisoformat(report["opens_at"])
    arrivals = wait_for_arrivals(sandbox, set(class_ids), n, opens, 10)
    openings = sandbox.openings_ns(set(class_ids))
    return measure(members, arrivals, openings, sandbox.offset_ns()) | {
        "mode": mode,
        "sender": report["sender"],
    }


def statuses(
    api: httpx.Client, ids: set[str], settle_s: float
) -> tuple[dict[str, int], dict[str, int]]:
    """Final status of this run's prebookings, and which path executed them (`executed_by`),
    from the API's list (pages of 10,000), once none is pending or claimed any more, or after
    `settle_s`: the app is then quiet for the floor."""
    deadline = time.monotonic() + settle_s
    while True:
        counts, paths = status_counts(api, ids)
        if not counts.keys() & {"pending", "loaded"} or time.monotonic() > deadline:
            return counts, paths
        time.sleep(1)


def status_counts(api: httpx.Client, ids: set[str]) -> tuple[dict[str, int], dict[str, int]]:
    counts: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    cursor = None
    while True:
        params = {"limit": "10000"} | ({"cursor": cursor} if cursor else {})
        page = api.get("/api/prebookings", params=params, timeout=120).json()
        for item in page["items"]:
            if item["id"] in ids:
                counts[item["status"]] += 1
                paths[str(item.get("executed_by"))] += 1
        cursor = page.get("next_cursor")
        if not cursor:
            return dict(counts), dict(paths)


def one_run(
    scenario: Scenario, stack_: Stack, api: httpx.Client, args: argparse.Namespace, run: int
) -> dict[str, Any]:
    """Create the crowd, let the app fire it, measure it and the floor."""
    load_before = os.getloadavg()
    tag = f"r{run}x{uuid.uuid4().hex[:5]}"
    sandbox = SandboxView(stack_.sandbox_url)
    wanted = plan(scenario, tag)
    put_sessions(api, [email for _, email in wanted], args.create_threads)
    rate = create_rate(api, wanted, args.create_threads)
    lead_s = crowd_lead_s(scenario.n, dict(kv.split("=", 1) for kv in args.app_env))
    if not scenario.qstash:
        lead_s = 0.0
    creating_s = scenario.n / rate * 1.5 + 1
    opens = datetime.now(UTC) + timedelta(seconds=creating_s + lead_s + args.lead_in)
    opens = opens.replace(microsecond=0) + timedelta(seconds=1)
    class_ids = sorted({c for c, _ in wanted})
    sizes = {c: sum(1 for k, _ in wanted if k == c) for c in class_ids}
    for class_id in class_ids:
        sandbox.add_class(class_id, opens, sizes[class_id])
    openings = sandbox.openings_ns(set(class_ids))
    started = time.monotonic()
    created, create_failures = create_all(api, wanted, opens, args.create_threads)
    created_s = time.monotonic() - started
    # Below 0: the last prebookings were created after their QStash message was due (it was
    # then published due at once), so admission started late: the run is not the scenario.
    margin_s = (opens - datetime.now(UTC)).total_seconds() - lead_s
    if margin_s < 0:
        print(
            f"warning: creation overran the lead by {-margin_s:.1f} s; raise --lead-in",
            file=sys.stderr,
        )
    pings = []
    if scenario.pings:
        pings = ping_cron(stack_.app_url, scenario.pings, opens, args.ping_spread_ms)
    arrivals = wait_for_arrivals(sandbox, set(class_ids), scenario.n, opens, args.grace)
    members = {
        c: [m.cookie for m in sorted(ms, key=lambda m: m.rank)]
        for c, ms in by_class_of(created).items()
    }
    app = measure(members, arrivals, openings, sandbox.offset_ns())
    final, executed_by = statuses(api, {c.id for c in created}, args.grace)
    floor = run_floor(sandbox, tag, [sizes[c] for c in class_ids], args.floor_mode)
    app_p99, floor_p99 = app["lateness_ms"].get("p99"), floor["lateness_ms"].get("p99")
    return {
        "scenario": scenario.name,
        "run": run,
        "opens_at": opens.isoformat(),
        "gym_clock": sandbox.clock(),
        "lead": {
            "crowd_lead_s": lead_s,
            "lead_in_s": args.lead_in,
            "create_s": round(created_s, 2),
            "probe_creates_per_s": round(rate, 1),
            "margin_s": round(margin_s, 2),
        },
        "create_failures": dict(Counter(create_failures)),
        "app": app,
        "statuses": final,
        "executed_by": executed_by,
        "floor": floor,
        "p99_ratio_to_floor": round(app_p99 / floor_p99, 2)
        if app_p99 and floor_p99 and app_p99 > 0 and floor_p99 > 0
        else None,
        "cron_pings": pings,
        "lb_requests_per_instance": lb_counts(stack_.lb_stats_url),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
    }


# --- output -----------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    return (
        "-"
        if value is None or value == {}
        else f"{value:,}"
        if isinstance(value, int)
        else str(value)
    )


def statuses_cell(run: dict[str, Any]) -> str:
    """Final statuses, and creates the API refused or did not answer in time, if any."""
    cells = [f"{k} {v:,}" for k, v in sorted(run["statuses"].items())]
    failed = sum(run["create_failures"].values())
    return ", ".join(cells + ([f"**{failed:,} creates failed**"] if failed else []))


def markdown(results: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """One row per run; lateness in ms against the sandbox's opening."""
    head = (
        "| scenario | run | n | layout | gym clock offset ± jitter ms | p50 | p99 | max "
        "| floor p99 | p99/floor | early | -12 answers (members) | accepted p99 (inversions) "
        "| FIFO inversions (classes) | got a place | never sent | statuses "
        "| lead margin s | load 1 m before → after |\n" + "| --- " * 19 + "|"
    )
    clock = settings.get("gym_clock", {})
    gym = f"{clock.get('offset_ms', 0):g} ± {clock.get('jitter_ms', 0):g}"
    layout = f"{settings['instances']}×{settings['workers']} {settings['db']}"
    lines = [head]
    for r in results:
        app, late = r["app"], r["app"]["lateness_ms"]
        lines.append(
            f"| {r['scenario']} | {r['run']} | {app['prebookings']:,} | {layout} | {gym} "
            f"| {fmt(late.get('p50'))} | {fmt(late.get('p99'))} | {fmt(late.get('max'))} "
            f"| {fmt(r['floor']['lateness_ms'].get('p99'))} | {fmt(r['p99_ratio_to_floor'])} "
            f"| {app['early']} | {app['too_early_answers']:,} ({app['members_refused_early']:,}) "
            f"| {fmt(app['accepted_lateness_ms'].get('p99'))} "
            f"({app['accepted_fifo_inversions']:,} inv.) "
            f"| {app['fifo_inversions']:,} ({app['classes_with_inversions']}) "
            f"| {app['got_place']:,} | {app['never_sent']:,} "
            f"| {statuses_cell(r)} "
            f"| {r['lead']['margin_s']} | {r['loadavg_before'][0]} → {r['loadavg_after'][0]} |"
        )
    return "\n".join(lines)


def write_results(
    name: str, payload: dict[str, Any], table: str, keep: bool, out: Path | None
) -> Path:
    """JSON (and the table) under bench/results/: `*.tmp` (gitignored) unless --keep."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out or RESULTS / f"scaleout-{name}-{stamp}.json{'' if keep else '.tmp'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    path.with_name(path.name.replace(".json", ".md")).write_text(table + "\n")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="one-class-200")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--smoke", action="store_true", help="20 prebookings, 1 instance, 2 workers"
    )
    parser.add_argument("--n", type=int, help="prebookings (overrides the scenario)")
    parser.add_argument("--classes", type=int, help="classes they spread over")
    parser.add_argument("--instances", type=int, help="gunicorn masters")
    parser.add_argument("--workers", type=int, help="workers per instance")
    parser.add_argument("--threads", type=int, help="GUNICORN_THREADS (default: the conf's)")
    parser.add_argument("--db", choices=("postgresql", "sqlite"))
    parser.add_argument("--qstash", action=argparse.BooleanOptionalAction, help="QSTASH_ENABLED")
    parser.add_argument(
        "--legacy-cron", action=argparse.BooleanOptionalAction, help="LEGACY_CRON_ENABLED"
    )
    parser.add_argument("--pings", type=int, help="concurrent cron POSTs at the opening")
    parser.add_argument("--ping-spread-ms", type=float, default=0.0, help="between those POSTs")
    parser.add_argument(
        "--lb",
        choices=("auto", "on", "off"),
        default="auto",
        help="HAProxy in front (auto: with 2+ instances or the scenario's choice)",
    )
    parser.add_argument("--balance", default="roundrobin", help="HAProxy balance algorithm")
    parser.add_argument(
        "--lead-in",
        type=float,
        default=4.0,
        help="s between the end of creation and the first QStash message due (on top of the"
        " crowd lead, lead_for(n-1), and the estimated creation time)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="s after the opening: no arrival by then = never sent",
    )
    parser.add_argument(
        "--clock-offset-ms",
        type=float,
        default=0.0,
        help="the sandbox's (gym's) clock runs this far ahead of ours (negative: behind)",
    )
    parser.add_argument(
        "--clock-jitter-ms",
        type=float,
        default=0.0,
        help="plus, per request, a uniform draw in [-jitter, +jitter] (the sandbox's option)",
    )
    parser.add_argument("--clock-seed", type=int, help="seed of the sandbox's jitter draws")
    parser.add_argument("--create-threads", type=int, default=8)
    parser.add_argument("--floor-mode", choices=("line", "threads"), default="line")
    parser.add_argument(
        "--pg-budget",
        type=int,
        default=64,
        help="PostgreSQL connections all app processes may hold together",
    )
    parser.add_argument(
        "--app-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the instances (repeatable)",
    )
    parser.add_argument("--keep", action="store_true", help="results as .json, not .json.tmp")
    parser.add_argument("--out", type=Path, help="write the JSON here instead")
    return parser.parse_args(argv)


def scenario_from(args: argparse.Namespace) -> Scenario:
    """The named scenario, shrunk by --smoke, then any explicit override."""
    scenario = SCENARIOS[args.scenario]
    if args.smoke:
        scenario = smoke(scenario)
    overrides = {
        "n": args.n,
        "classes": args.classes,
        "instances": args.instances,
        "workers": args.workers,
        "db": args.db,
        "qstash": args.qstash,
        "legacy_cron": args.legacy_cron,
        "pings": args.pings,
    }
    return replace(scenario, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenario = scenario_from(args)
    results = []
    with stack(scenario, args) as stack_:
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        limits = httpx.Limits(max_connections=args.create_threads * 2)
        with httpx.Client(base_url=stack_.app_url, headers=auth, timeout=60, limits=limits) as api:
            for run in range(1, args.runs + 1):
                result = one_run(scenario, stack_, api, args, run)
                print(json.dumps(result), flush=True)
                results.append(result)
    settings = {k: v for k, v in vars(args).items() if k != "out"} | stack_.settings
    settings |= {"scenario": asdict(scenario), "cpus": os.cpu_count()}
    table = markdown(results, settings)
    path = write_results(
        scenario.name, {"settings": settings, "results": results}, table, args.keep, args.out
    )
    print(table)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
