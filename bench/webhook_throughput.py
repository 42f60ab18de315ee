"""Signed QStash webhook deliveries handled per second, under gunicorn, from a separate client.

The stack is bench/scaleout.py's: a private database (PostgreSQL by default, `--db sqlite`),
`--instances` gunicorn masters (the repo's gunicorn.conf.py, `--workers` each, 4 by default),
HAProxy in front with `--lb on` (or with 2+ instances), the AimHarder sandbox and qstash_dev in
their own processes. QSTASH_ROLLOUT_PERCENT=0, so the app publishes nothing: the deliveries
come from this benchmark.

N prebookings (one user and one class each) are created through the API, opening `--opens-in`
seconds from now (default -1: already due, so each first delivery claims and books at once).
Each delivery body is then signed exactly as QStash signs it (`qstash_dev.signing.sign` with
the dev signing key over the body and `APP_BASE_URL + path`), all precomputed before the load.
The load generator, bench/webhook_load.py, runs in its own process (asyncio, raw HTTP/1.1,
`--concurrency` keep-alive connections) and sends the N deliveries once (first deliveries),
then the same N again (QStash's at-least-once duplicates: each must answer `lost_claim` and
book nothing). Reported: deliveries/s and p50/p99 latency of each phase, the webhook's
answers, bookings at the sandbox, the load average.

`--profile DIR`: py-spy (pinned in requirements-dev.txt) samples every worker of every
instance while the load runs (`py-spy record --pid <master> --subprocesses --gil`, only the
thread holding the GIL, i.e. the app's CPU), as collapsed stacks (`--format raw`: what
flamegraph.pl and speedscope read), then bench/profile_summary.py breaks them down under the
webhook (`prebooking_execute`), into DIR.

After issue 14's sweep lands (it arms due prebookings that no delivery covers), already-due
prebookings may be booked before their delivery comes: use `--opens-in 300` to measure
admission (the first deliveries then arm, the dispatcher fires later); the answers' `action`
counts say which happened.

    python bench/webhook_throughput.py --n 500 --concurrency 32
    python bench/webhook_throughput.py --n 2000 --workers 4 --instances 2 --profile /tmp/wh
    python bench/webhook_throughput.py --n 500 --workers 1 --db sqlite
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
from precision_qstash import API_TOKEN, DAY  # noqa: E402
from scaleout import Scenario, Stack, stack  # noqa: E402

from flask_app.config import DEV_QSTASH_CURRENT_SIGNING_KEY  # noqa: E402
from qstash_dev.signing import sign  # noqa: E402

PATH = "/api/qstash/prebooking-execute"


def create(api: httpx.Client, n: int, opens: datetime, threads: int) -> list[dict[str, Any]]:
    """N users, one prebooking each in its own class; the delivery bodies QStash would send."""

    def one(i: int) -> dict[str, Any]:
        email = f"u{i}@bench.example"
        cookies = {"amhrdrauth": f"tok{i}"}
        api.put(f"/api/sessions/{email}", json={"cookies": cookies}).raise_for_status()
        made = api.post(
            "/api/prebookings",
            json={
                "user_email": email,
                "available_at": opens.isoformat(),
                "booking_data": {"box": "sandbox", "class_id": f"c{i}", "day": DAY},
            },
        )
        made.raise_for_status()
        return {
            "prebookingId": made.json()["id"],
            "userEmail": email,
            "scheduledAt": opens.isoformat(),
        }

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(n)))


def signed(url: str, bodies: list[dict[str, Any]]) -> str:
    """JSON lines of {body, signature}, signed now (tokens live 5 minutes)."""
    lines = []
    for body in bodies:
        raw = json.dumps(body)
        lines.append(
            json.dumps(
                {"body": raw, "signature": sign(DEV_QSTASH_CURRENT_SIGNING_KEY, url, raw.encode())}
            )
        )
    return "\n".join(lines) + "\n"


def load(app_url: str, deliveries: Path, concurrency: int) -> dict[str, Any]:
    """One pass of the load generator, in its own process."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "webhook_load.py"), "--url", app_url]
        + ["--deliveries", str(deliveries), "--concurrency", str(concurrency)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"webhook_load.py failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


@contextmanager
def profiled(stack_: Stack, folder: Path | None) -> Iterator[list[Path]]:
    """py-spy on every instance's master and its workers while the block runs."""
    if folder is None:
        yield []
        return
    folder.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).with_name("py-spy"))
    outputs, spies = [], []
    for i, master in enumerate(stack_.masters, 1):
        out = folder / f"webhook-instance{i}.txt"
        args = [spy, "record", "--pid", str(master.pid), "--subprocesses", "--gil"]
        args += ["--nonblocking", "--rate", "200", "--format", "raw", "--output", str(out)]
        log = open(folder / f"py-spy-instance{i}.log", "wb")
        spies.append((subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT), log))
        outputs.append(out)
    try:
        yield outputs
    finally:
        for proc, log in spies:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            proc.wait(timeout=60)
            log.close()


def summarise(profiles: list[Path]) -> dict[str, str]:
    """bench/profile_summary.py under the webhook, per profile, saved beside it."""
    out = {}
    for path in profiles:
        if not path.exists():
            out[str(path)] = "py-spy wrote nothing (see the py-spy log beside it)"
            continue
        done = subprocess.run(
            [sys.executable, str(BENCH / "profile_summary.py"), str(path)]
            + ["--under", "prebooking_execute", "--depth", "1"],
            capture_output=True,
            text=True,
            check=True,
        )
        path.with_suffix(".summary.md").write_text(done.stdout)
        out[str(path)] = done.stdout
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--threads", type=int, help="GUNICORN_THREADS (default: the conf's)")
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--lb", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--balance", default="roundrobin")
    parser.add_argument("--pg-budget", type=int, default=64)
    parser.add_argument("--opens-in", type=float, default=-1.0, help="s; negative: already due")
    parser.add_argument("--create-threads", type=int, default=8)
    parser.add_argument("--app-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy every worker")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    args.app_env = ["QSTASH_ROLLOUT_PERCENT=0", *args.app_env]
    # Rollout 0 % leaves every prebooking to cron as far as the app's start-up check goes
    # (it refuses a configuration in which some prebookings have no path); nobody pings cron
    # here, so every booking comes from this benchmark's deliveries.
    scenario = Scenario(
        "webhook", args.n, args.n, args.instances, args.workers, db=args.db, legacy_cron=True
    )
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    with stack(scenario, args) as stack_, tempfile.TemporaryDirectory() as tmp:
        with httpx.Client(base_url=stack_.app_url, headers=auth, timeout=60) as api:
            opens = datetime.now(UTC) + timedelta(seconds=args.opens_in)
            if args.opens_in >= 0:
                opens += timedelta(seconds=args.n / 50)  # still ahead once all are created
            bodies = create(api, args.n, opens, args.create_threads)
        deliveries = Path(tmp) / "deliveries.jsonl"
        deliveries.write_text(signed(stack_.app_url + PATH, bodies))
        load_before = os.getloadavg()
        with profiled(stack_, args.profile) as profiles:
            first = load(stack_.app_url, deliveries, args.concurrency)
            duplicates = load(stack_.app_url, deliveries, args.concurrency)
        load_after = os.getloadavg()
        state = httpx.get(f"{stack_.sandbox_url}/_sandbox/state", timeout=60).json()
    result = {
        "settings": {k: v for k, v in vars(args).items() if k != "profile"}
        | stack_.settings
        | {"cpus": os.cpu_count(), "profile": str(args.profile) if args.profile else None},
        "first_deliveries": first,
        "duplicate_deliveries": duplicates,
        "bookings_at_sandbox": len(state["bookings"]),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in load_after],
    }
    print(json.dumps(result, indent=2))
    for path, text in summarise(profiles).items():
        print(f"\n## {path}\n{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
