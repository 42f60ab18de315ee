"""Benchmark: backfill N pending prebookings through QStash's batch endpoint vs one by one.

    python bench/backfill.py [--n 10000] [--db sqlite|postgresql|both] [--batch-sizes 100,500]

For each mode a fresh `python -m qstash_dev` is started in a subprocess on a free port and the
database is reseeded with N pending prebookings (windows 1 h .. 6 d ahead, so every one gets a
message). "batch-K" runs migration.backfill.run_backfill (the command's code path); "one-by-one"
publishes each message with Gateway.publish and commits its id row by row. Afterwards it counts
the ids stored and the messages qstash_dev created (its CREATED events), and reruns the backfill
to check that nothing new is published. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from precision_qstash import free_port  # noqa: E402

from flask_app import create_app  # noqa: E402
from flask_app.config import DEV_QSTASH_TOKEN  # noqa: E402
from flask_app.db import get_db  # noqa: E402
from flask_app.dbschema import upgrade  # noqa: E402
from flask_app.models import Prebooking  # noqa: E402
from flask_app.qstash.gateway import Gateway, get_gateway  # noqa: E402
from flask_app.qstash.publish import policy_from  # noqa: E402
from migration.backfill import plan_backfill, run_backfill, unpublished_pages  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@dataclass
class Result:
    db: str
    mode: str
    n: int
    seconds: float
    stored: int
    created: int
    requests: int
    rerun_published: int | None

    def row(self) -> str:
        rate = self.n / self.seconds
        rerun = "-" if self.rerun_published is None else str(self.rerun_published)
        return (
            f"| {self.db} | {self.mode} | {self.n} | {self.seconds:.2f} | {rate:,.0f} | "
            f"{self.requests} | {self.created / self.n:.2f} | {self.stored} | {rerun} |"
        )


@contextmanager
def qstash_dev() -> Iterator[str]:
    """A fresh `python -m qstash_dev` in a subprocess; yields its URL."""
    port = free_port()
    env = os.environ | {"QSTASH_DEV_RETRY_DELAY_SCALE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qstash_dev", "--port", str(port), "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"{url}/v2/keys", headers=_auth(), timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {DEV_QSTASH_TOKEN}"}


def created_messages(url: str) -> int:
    """How many messages qstash_dev created (CREATED events), following cursors."""
    total, cursor = 0, None
    with httpx.Client(base_url=url, headers=_auth(), timeout=30) as client:
        while True:
            params: dict[str, Any] = {"state": "CREATED", "count": 1000}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/v2/events", params=params).json()
            total += len(page["events"])
            cursor = page.get("cursor")
            if not cursor:
                return total


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A migrated, empty database URL (SQLite temp file or a private PostgreSQL database)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            upgrade(url)
            yield url
        return
    name = f"bench_backfill_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        url = f"{base}/{name}"
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(factory: Callable[[], Session], n: int) -> None:
    """Replace every prebooking with n pending ones, windows spread 1 h .. 6 d ahead."""
    now = datetime.now(UTC)
    spread = timedelta(days=6) - timedelta(hours=1)
    rows = [
        {
            "id": str(uuid.uuid4()),
            "user_email": f"user{i % 500}@example.com",
            "booking_data": {"box": "b", "class_id": str(i), "day": "20261130", "family_id": None},
            "available_at": now + timedelta(hours=1) + spread * i / n,
            "status": "pending",
            "qstash_generation": 0,
            "claim_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        for i in range(n)
    ]
    with factory() as session:
        session.execute(delete(Prebooking))
        for start in range(0, n, 1000):
            session.execute(insert(Prebooking), rows[start : start + 1000])
        session.commit()


def stored_ids(factory: Callable[[], Session]) -> int:
    with factory() as session:
        query = select(func.count()).where(Prebooking.qstash_message_id.is_not(None))
        return session.scalar(query.select_from(Prebooking)) or 0


def one_by_one(app: Any, gateway: Gateway) -> None:
    """The naive baseline: one publish request and one commit per prebooking."""
    factory = get_db(app).sessions
    policy = policy_from(app.config)
    for page in unpublished_pages(factory):
        plan = plan_backfill(page, datetime.now(UTC), policy, 100, timedelta(seconds=60))
        for pid, msg in plan.publish:
            answer = gateway.publish(msg)
            with factory() as session:
                session.execute(
                    update(Prebooking)
                    .where(Prebooking.id == pid)
                    .values(qstash_message_id=answer.message_id)
                )
                session.commit()


def batched(app: Any, gateway: Gateway, batch_size: int) -> int:
    """The command's code path; returns how many messages were newly published."""
    summary = run_backfill(
        session_factory=get_db(app).sessions,
        gateway=gateway,
        clock=lambda: datetime.now(UTC),
        policy=policy_from(app.config),
        rollout_percent=100,
        batch_size=batch_size,
    )
    if summary.failed:
        raise SystemExit(f"backfill failed: {summary.errors}")
    return summary.published


def cli(url: str, qurl: str, batch_size: int) -> None:
    """The real command in a fresh process (start-up, progress bar and summary included)."""
    env = os.environ | {
        "DATABASE_URL": url,
        "QSTASH_URL": qurl,
        "QSTASH_TOKEN": DEV_QSTASH_TOKEN,
        "QSTASH_ENABLED": "true",
    }
    command = ["-m", "flask", "--app", "wsgi", "migration", "backfill"]
    subprocess.run(
        [sys.executable, *command, "--batch-size", str(batch_size)],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def measure(db: str, url: str, mode: str, n: int) -> Result:
    """Seed, run one mode against a fresh qstash_dev, verify, rerun."""
    with qstash_dev() as qurl:
        app = create_app({"DATABASE_URL": url, "QSTASH_URL": qurl, "QSTASH_ENABLED": True})
        gateway = get_gateway(app)
        factory = get_db(app).sessions
        seed(factory, n)
        batch_size = int(mode.rsplit("-", 1)[1]) if "batch-" in mode else 1
        started = time.perf_counter()
        if mode.startswith("cli-"):
            cli(url, qurl, batch_size)
        elif batch_size == 1:
            one_by_one(app, gateway)
        else:
            batched(app, gateway, batch_size)
        seconds = time.perf_counter() - started
        rerun = batched(app, gateway, batch_size) if batch_size > 1 else None
        result = Result(
            db=db,
            mode=mode,
            n=n,
            seconds=seconds,
            stored=stored_ids(factory),
            created=created_messages(qurl),
            requests=-(-n // batch_size),
            rerun_published=rerun,
        )
        get_db(app).engine.dispose()
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--batch-sizes", default="100,500")
    args = parser.parse_args()
    sizes = args.batch_sizes.split(",")
    modes = [f"batch-{k}" for k in sizes] + [f"cli-batch-{sizes[-1]}", "one-by-one"]
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print()
    print(
        "| DB | mode | prebookings | wall s | messages/s | QStash requests "
        "| messages per prebooking | ids stored | rerun published |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind in kinds:
        with database(kind) as url:
            for mode in modes:
                print(measure(kind, url, mode, args.n).row(), flush=True)


if __name__ == "__main__":
    main()
