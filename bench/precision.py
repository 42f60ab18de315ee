"""Firing precision at AimHarder: N prebookings opening at one instant, QStash vs legacy path.

Runs the real stack: a private PostgreSQL database (created, migrated, dropped), the app under
gunicorn (`gunicorn.conf.py`), `python -m qstash_dev` for the QStash path, and the AimHarder
sandbox in this process (it stamps each booking with the kernel's receive time, `at_ns`).

- `--path qstash`: QSTASH_ENABLED; N prebookings for N users opening at the same whole second
  (`--lead-in` s ahead, more for big N); qstash_dev delivers each QSTASH_LEAD_SECONDS early and
  the webhook fires it at `available_at + QSTASH_FIRE_STAGGER_MS × rank`.
- `--path legacy`: QSTASH_ENABLED=false; cron-job.org's ping is simulated by this script: it
  POSTs the real `/api/cron/prebooking-scheduler` at the next whole minute (:00), as
  cron-job.org does (its own ~0-1 s jitter is not simulated). The window opens `offset` s
  before that tick, `offset` drawn uniformly from [0, 60) per run (seeded, reported): a window
  opens at any second of the minute. One tick books at most CRON_BATCH_LIMIT (50); the rest
  would wait for the next minute's tick (>= 60 s later, no place): the script cancels them
  after the tick (`left_for_next_tick`), counts them as not arrived, and does not wait.

Reported per size and run: lateness at the sandbox against `available_at` (p50/p99/max, ms),
early arrivals, FIFO inversions (pairs that arrived out of creation order), how many got a
place in a class of N places that fills 2 s after opening (arrived booked before
`available_at + 2 s`), and the 1-minute load average.

    python bench/precision.py --path qstash --sizes 1,50,200,1000 --runs 3
    python bench/precision.py --path legacy --sizes 1,50,200,1000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from precision_qstash import (  # noqa: E402
    API_TOKEN,
    DAY,
    create,
    free_port,
    inversions,
    private_database,
    process,
    summary,
)

from aimharder_sandbox.testing import Sandbox, run_sandbox  # noqa: E402

CRON_SECRET = "bench-cron"
FILL_S = 2.0


def wait_arrivals(sandbox: Sandbox, class_id: str, n: int, timeout_s: float) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        arrivals = [a for a in sandbox.arrivals() if a["class_id"] == class_id]
        if len(arrivals) >= n or time.monotonic() > deadline:
            return arrivals
        time.sleep(0.2)


def measure(
    arrivals: list[dict[str, Any]], n: int, class_id: str, opens: datetime
) -> dict[str, Any]:
    """Lateness, early, inversions and places, from the sandbox's arrival stamps."""
    rank = {f"cookie-bench{i}-{class_id}@example.com": i for i in range(n)}
    opens_ns = int(opens.timestamp() * 1e6) * 1000
    late = [(a["at_ns"] - opens_ns) / 1e6 for a in arrivals]
    order = [rank[a["user"]] for a in sorted(arrivals, key=lambda a: a["at_ns"])]
    fill_ns = opens_ns + int(FILL_S * 1e9)
    placed = sum(1 for a in arrivals if a["at_ns"] <= fill_ns and a["book_state"] == 1)
    return {
        "n": n,
        "arrived": len(arrivals),
        "vs_available_at_ms": summary(late),
        "early": sum(1 for v in late if v < 0),
        "fifo_inversions": inversions(order),
        "got_place_by_2s": placed,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def split(
    api: httpx.Client,
    created: list[dict[str, Any]],
    arrivals: list[dict[str, Any]],
    opens: datetime,
    stagger_ms: float,
) -> dict[str, Any]:
    """Where the lateness goes: the request's write (`sent_at`) against its own fire instant
    (the firing line's wake-up and its place in the back-to-back writes), and the transit from
    that write to the sandbox's kernel stamp."""
    opens_ns = opens.timestamp() * 1e9
    timing: dict[str, tuple[float, float]] = {}  # sandbox user -> (sent, own fire instant)
    for i, c in enumerate(created):
        row = api.get(f"/api/prebookings/{c['id']}").json()
        sent_at = (row.get("result") or {}).get("sent_at")
        if sent_at:
            sent = datetime.fromisoformat(sent_at).timestamp() * 1e9
            timing[f"cookie-{row['user_email']}"] = (sent, opens_ns + i * stagger_ms * 1e6)
    seen = [a for a in arrivals if a["user"] in timing]
    write = [(timing[a["user"]][0] - timing[a["user"]][1]) / 1e6 for a in seen]
    transit = [(a["at_ns"] - timing[a["user"]][0]) / 1e6 for a in seen]
    return {"write_vs_own_fire_ms": summary(write), "transit_ms": summary(transit)}


def run_qstash(
    api: httpx.Client, sandbox: Sandbox, n: int, lead_in_s: float, stagger_ms: float
) -> dict[str, Any]:
    class_id = f"q{n}x{uuid.uuid4().hex[:6]}"
    lead = lead_in_s + n * 0.1  # creating a prebooking takes ~10-30 ms, more when loaded
    opens = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
    sandbox.add_class(class_id, DAY, opens_at=opens, capacity=n)
    created = create(api, n, class_id, opens)
    if datetime.now(UTC) > opens - timedelta(seconds=4):
        raise RuntimeError("creating took too long; raise --lead-in")
    # Stay off the sandbox until the burst is over: reading arrivals takes its state lock.
    time.sleep(max(0.0, (opens - datetime.now(UTC)).total_seconds() + 2))
    arrivals = wait_arrivals(sandbox, class_id, n, 30)
    return measure(arrivals, n, class_id, opens) | split(api, created, arrivals, opens, stagger_ms)


def run_legacy(
    api: httpx.Client, app_url: str, sandbox: Sandbox, n: int, rng: random.Random
) -> dict[str, Any]:
    class_id = f"l{n}x{uuid.uuid4().hex[:6]}"
    ready = datetime.now(UTC) + timedelta(seconds=3 + n * 0.04)
    tick = (ready + timedelta(minutes=1)).replace(second=0, microsecond=0)
    offset_s = rng.randrange(0, 60_000) / 1000
    opens = tick - timedelta(seconds=offset_s)
    sandbox.add_class(class_id, DAY, opens_at=opens, capacity=n)
    created = create(api, n, class_id, opens)
    time.sleep(max(0.0, (tick - datetime.now(UTC)).total_seconds()))
    resp = httpx.post(
        f"{app_url}/api/cron/prebooking-scheduler",
        headers={"Authorization": f"Bearer {CRON_SECRET}"},
        timeout=60,
    )
    report = resp.json()
    arrivals = wait_arrivals(sandbox, class_id, min(n, int(report.get("claimed", n))), 10)
    # What this tick left for the next minute's: cancelled, so the next run starts clean.
    left = 0
    for c in created:
        if api.get(f"/api/prebookings/{c['id']}").json()["status"] == "pending":
            api.delete(f"/api/prebookings/{c['id']}").raise_for_status()
            left += 1
    tick_ns = int(tick.timestamp()) * 1_000_000_000
    after_tick = [(a["at_ns"] - tick_ns) / 1e6 for a in arrivals]
    return measure(arrivals, n, class_id, opens) | {
        "offset_s": offset_s,
        "vs_tick_ms": summary(after_tick),
        "tick": {k: report.get(k) for k in ("due", "claimed", "deferred", "duration_ms")},
        "left_for_next_tick": left,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", choices=("qstash", "legacy"), default="qstash")
    parser.add_argument("--sizes", default="1,50,200,1000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lead-in", type=float, default=15.0, help="qstash: s to the opening")
    parser.add_argument("--stagger-ms", type=float, default=0.01, help="QSTASH_FIRE_STAGGER_MS")
    parser.add_argument("--lead-seconds", type=float, default=3.0, help="QSTASH_LEAD_SECONDS")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--leader",
        default="true",
        help="DISPATCH_LEADER: true, one process per class writes it all; false, every process"
        " fires its own members at rank-derived instants",
    )
    parser.add_argument("--firing-line", default="true")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="sample the app with py-spy (threads holding the GIL) into FILE, collapsed stacks;"
        " summarise with bench/profile_summary.py",
    )
    args = parser.parse_args()
    python = sys.executable
    qstash_port, app_port = free_port(), free_port()
    from cryptography.fernet import Fernet

    with private_database() as db_url, run_sandbox() as sandbox:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH", "GUNICORN"))}
        app_url = f"http://127.0.0.1:{app_port}"
        app_env = base_env | {
            "DATABASE_URL": db_url,
            "QSTASH_ENABLED": "true" if args.path == "qstash" else "false",
            "LEGACY_CRON_ENABLED": "true",
            "CRON_SECRET": CRON_SECRET,
            "QSTASH_URL": f"http://127.0.0.1:{qstash_port}",
            "APP_BASE_URL": app_url,
            "AIMHARDER_BASE_URL": sandbox.url,
            "AIMHARDER_FIRING_LINE": args.firing_line,
            "API_TOKEN": API_TOKEN,
            "SESSION_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "GUNICORN_BIND": f"127.0.0.1:{app_port}",
            "GUNICORN_WORKERS": str(args.workers),
            "GUNICORN_THREADS": str(args.threads),
            "DISPATCH_LEADER": args.leader,
        }
        app_env["QSTASH_FIRE_STAGGER_MS"] = str(args.stagger_ms)
        app_env["QSTASH_LEAD_SECONDS"] = str(args.lead_seconds)
        q_env = base_env | {"QSTASH_DEV_RETRY_DELAY_SCALE": "1"}
        q_args = [python, "-m", "qstash_dev", "--port", str(qstash_port), "--quiet"]
        g_args = [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
        if args.profile:
            spy = str(Path(python).with_name("py-spy"))
            spy_args = [spy, "record", "--subprocesses", "--gil", "--nonblocking", "--rate", "200"]
            g_args = [*spy_args, "--format", "raw", "--output", args.profile, "--", *g_args]
        rng = random.Random(args.seed)
        results = []
        with (
            process(q_args, q_env, f"http://127.0.0.1:{qstash_port}/v2/keys"),
            process(g_args, app_env, f"{app_url}/api/health"),
            httpx.Client(
                base_url=app_url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=60
            ) as api,
        ):
            for n in (int(s) for s in args.sizes.split(",")):
                for run in range(args.runs):
                    if args.path == "qstash":
                        result = run_qstash(api, sandbox, n, args.lead_in, args.stagger_ms)
                    else:
                        result = run_legacy(api, app_url, sandbox, n, rng)
                    result["run"] = run + 1
                    print(json.dumps(result), flush=True)
                    results.append(result)
    settings = vars(args) | {"cpus": os.cpu_count()}
    print(json.dumps({"settings": settings, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
