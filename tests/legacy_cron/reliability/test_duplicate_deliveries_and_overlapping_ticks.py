"""Scenario: duplicated QStash deliveries and overlapping cron ticks, on the real stack.

Fault: every QStash message is delivered two or three times (an exact duplicate racing the
original, and a late one racing the cron path), while several cron ticks run concurrently
every half second; the app runs under gunicorn with two workers on PostgreSQL.
Must hold: zero double bookings and zero lost prebookings: every prebooking ends completed,
booked exactly once at the AimHarder sandbox, asked exactly once, and never before its window.

The 1,000-prebooking run is `make reliability`; a 100-prebooking run is in `make test`. Both
run on a private PostgreSQL cluster (see `stack.private_cluster`).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import qstash
from sqlalchemy import create_engine, func, select

from aimharder_sandbox.state import default_box_id
from aimharder_sandbox.testing import Sandbox, run_sandbox
from flask_app.models import Prebooking
from flask_app.qstash.planning import is_in_rollout
from qstash_dev.testing import RunningServer, run_server
from tests.conftest import API_TOKEN, CRON_SECRET
from tests.reliability.stack import (
    AUTH,
    CRON_AUTH,
    CRON_URL,
    EXECUTE_URL,
    app_env,
    free_port,
    gunicorn,
    private_cluster,
    private_database,
    wait_until,
)

DAY = "20261201"
CLASSES = 10
ROLLOUT_PERCENT = 50
CONCURRENT_TICKS = 3
TICK_EVERY_S = 0.5


@dataclass
class Plan:
    """Who books what and when, and which deliveries the test adds."""

    users: list[str]
    opens: dict[str, datetime]  # class id -> opening instant
    cron_only: set[tuple[str, str]] = field(default_factory=set)
    rollout: set[tuple[str, str]] = field(default_factory=set)


def cookie_of(email: str) -> str:
    return "cookie-" + email.split("@")[0]


def make_plan(count: int, first_opening: datetime) -> Plan:
    """count prebookings: count/CLASSES users × CLASSES classes, class j opening at +0.5 j s."""
    users = [f"u{n:04d}@example.com" for n in range(count // CLASSES)]
    opens = {f"c{j}": first_opening + timedelta(seconds=0.5 * j) for j in range(CLASSES)}
    plan = Plan(users, opens)
    for email in users:
        for j, class_id in enumerate(opens):
            if is_in_rollout(email, ROLLOUT_PERCENT):
                plan.rollout.add((email, class_id))
            elif j % 2:
                plan.cron_only.add((email, class_id))  # no QStash delivery at all
    return plan


def create_all(http: httpx.Client, plan: Plan) -> dict[tuple[str, str], dict[str, Any]]:
    """Store every user's cookies, then create the prebookings concurrently through the API."""
    for email in plan.users:
        body = {"cookies": {"amhrdrauth": cookie_of(email)}}
        assert http.put(f"/api/sessions/{email}", json=body).status_code == 200

    def create(pair: tuple[str, str]) -> dict[str, Any]:
        email, class_id = pair
        body = {
            "user_email": email,
            "available_at": plan.opens[class_id].isoformat(),
            "booking_data": {
                "box": "sandbox",
                "box_id": default_box_id("sandbox"),
                "class_id": class_id,
                "day": DAY,
            },
        }
        resp = http.post("/api/prebookings", json=body)
        assert resp.status_code == 201, resp.text
        created: dict[str, Any] = resp.json()
        return created

    pairs = [(email, class_id) for email in plan.users for class_id in plan.opens]
    with ThreadPoolExecutor(8) as pool:
        return dict(zip(pairs, pool.map(create, pairs), strict=True))


def publish_duplicates(
    srv: RunningServer, app_url: str, plan: Plan, created: dict[tuple[str, str], dict[str, Any]]
) -> int:
    """Add deliveries: an exact twin of each original, and a late one racing the cron path."""
    sdk = qstash.QStash(srv.token, base_url=srv.url, retry=False)
    messages: list[Any] = []
    for n, (pair, row) in enumerate(created.items()):
        if pair in plan.cron_only:
            continue
        opens = plan.opens[pair[1]]
        body = {"prebookingId": row["id"], "userEmail": pair[0], "scheduledAt": opens.isoformat()}
        late = math.ceil(opens.timestamp()) + n % 3
        message = {"url": app_url + EXECUTE_URL, "body": body}
        messages.append(message | {"not_before": late})
        if pair in plan.rollout:
            assert row["qstash_message_id"], "a rollout prebooking got no message at create"
            messages.append(message | {"not_before": int(opens.timestamp() - 1)})
    for start in range(0, len(messages), 100):
        sdk.message.batch_json(messages[start : start + 100])
    return len(messages)


class Ticker:
    """Fires CONCURRENT_TICKS cron ticks at once, every TICK_EVERY_S, until stopped."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.statuses: Counter[int | str] = Counter()
        self.totals: Counter[str] = Counter()  # summed over the ticks' reports
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _tick(self, http: httpx.Client) -> None:
        try:
            resp = http.post(CRON_URL, headers=CRON_AUTH)
        except httpx.HTTPError as exc:
            self.statuses[type(exc).__name__] += 1
            return
        self.statuses[resp.status_code] += 1
        if resp.status_code == 200:
            self.totals.update({k: v for k, v in resp.json().items() if isinstance(v, int)})

    def _run(self) -> None:
        with (
            httpx.Client(base_url=self.base_url, timeout=60) as http,
            ThreadPoolExecutor(CONCURRENT_TICKS * 4) as pool,
        ):
            while not self.stop.wait(TICK_EVERY_S):
                for _ in range(CONCURRENT_TICKS):
                    pool.submit(self._tick, http)

    def __enter__(self) -> Ticker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=90)


def run_scenario(count: int, tmp_path: Any, fernet_key: str, lead_s: float) -> None:
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    # A private cluster: two workers may open 2 × 50 pooled connections, the shared
    # cluster's whole max_connections (other engineers' tests use it).
    with (
        private_cluster(max_connections=250) as cluster,
        private_database(cluster.admin_url) as db_url,
        run_server(retry_delay_scale=0.01) as srv,
        run_sandbox() as sandbox,
    ):
        env = app_env(
            DATABASE_URL=db_url,
            API_TOKEN=API_TOKEN,
            CRON_SECRET=CRON_SECRET,
            SESSION_ENCRYPTION_KEYS=fernet_key,
            QSTASH_ENABLED="true",
            QSTASH_ROLLOUT_PERCENT=ROLLOUT_PERCENT,
            QSTASH_URL=srv.url,
            QSTASH_TOKEN=srv.token,
            QSTASH_LEAD_SECONDS="1",
            AIMHARDER_BASE_URL=sandbox.url,
            APP_BASE_URL=app_url,
            _PORT=port,
        )
        with gunicorn(env, tmp_path, workers=2) as server:
            plan = make_plan(count, datetime.now(UTC) + timedelta(seconds=lead_s))
            for class_id, opens in plan.opens.items():
                sandbox.add_class(class_id, DAY, opens_at=opens, capacity=count)
            with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
                created = create_all(http, plan)
            publish_duplicates(srv, server.url, plan, created)
            with Ticker(server.url) as ticker:
                settled(db_url, count, srv)
            check(db_url, plan, sandbox, ticker, created)


def settled(db_url: str, count: int, srv: RunningServer) -> None:
    engine = create_engine(db_url)
    terminal = ("completed", "failed", "cancelled")

    def done() -> bool:
        with engine.connect() as conn:
            stmt = select(func.count()).where(Prebooking.status.in_(terminal))
            return bool(conn.execute(stmt).scalar_one() == count)

    wait_until(done, f"all {count} prebookings to settle", timeout_s=240, every_s=0.5)
    assert srv.wait_idle(timeout=120), "qstash_dev still had deliveries in flight"
    engine.dispose()


def check(
    db_url: str,
    plan: Plan,
    sandbox: Sandbox,
    ticker: Ticker,
    created: dict[tuple[str, str], dict[str, Any]],
) -> None:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Prebooking.status, Prebooking.executed_by, Prebooking.error_message)
        ).all()
    engine.dispose()
    why = Counter((status, by, error) for status, by, error in rows if status != "completed")
    assert Counter(status for status, _, _ in rows) == {"completed": len(created)}, why
    by = Counter(executed_by for _, executed_by, _ in rows)
    assert by["cron"] >= len(plan.cron_only) and by["qstash"] >= len(plan.rollout)
    bookings = Counter((b["user"], b["class_id"]) for b in sandbox.bookings())
    wanted = {(cookie_of(email), class_id) for email, class_id in created}
    assert set(bookings) == wanted, "a prebooking was not booked at AimHarder"
    assert set(bookings.values()) == {1}, "a prebooking was booked twice"
    arrivals = sandbox.arrivals()
    asked = Counter((a["user"], a["class_id"]) for a in arrivals)
    assert set(asked.values()) == {1}, "AimHarder was asked twice for one prebooking"
    for arrival in arrivals:
        opens = plan.opens[arrival["class_id"]]
        assert arrival["at_ns"] >= int(opens.timestamp() * 1e9), "booked before the window"
    assert set(ticker.statuses) == {200} and ticker.statuses.total() >= CONCURRENT_TICKS
    assert ticker.totals["errors"] == 0, ticker.totals
    # Every cron execution was armed by one tick's claim (ticks answer before booking).
    assert by["cron"] == ticker.totals["claimed"], (ticker.totals, by)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_100_prebookings_with_duplicate_deliveries_and_overlapping_ticks_book_each_once(
    tmp_path, fernet_key
):
    run_scenario(100, tmp_path, fernet_key, lead_s=8)


@pytest.mark.reliability
@pytest.mark.timeout(900)
def test_1000_prebookings_with_duplicate_deliveries_and_overlapping_ticks_book_each_once(
    tmp_path, fernet_key
):
    run_scenario(1000, tmp_path, fernet_key, lead_s=45)


def test_the_plan_covers_both_paths_and_both_kinds_of_duplicates():
    plan = make_plan(100, datetime(2026, 12, 1, 7, tzinfo=UTC))
    assert len(plan.users) * len(plan.opens) == 100
    assert plan.rollout and plan.cron_only
    assert not plan.rollout & plan.cron_only
