"""The sandbox over real HTTP: AimHarder's wire format, the admin API, faults, concurrency."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from aimharder_sandbox.server import box_from_host
from aimharder_sandbox.testing import Sandbox, run_sandbox

DAY = "20261128"


def _book(http: httpx.Client, user: str | None = "alice", class_id: str = "101") -> httpx.Response:
    headers = {"Cookie": f"amhrdrauth={user}"} if user is not None else {}
    form = {"id": class_id, "day": DAY, "insist": "0", "familyId": ""}
    return http.post("/api/book", data=form, headers=headers)


def _state(response: httpx.Response) -> Any:
    return response.json().get("bookState")


def test_book_answers_like_aimharder(http):
    body = _book(http).json()
    assert body["bookState"] == 1
    assert body["id"]
    assert _book(http, None).json() == {"logout": 1}


def test_admin_class_before_opening_is_too_early(http):
    created = http.post(
        "/_sandbox/classes",
        json={
            "class_id": "101",
            "day": DAY,
            "opens_at": "2999-01-01T00:00:00+01:00",
            "capacity": 5,
            "waitlist": 0,
        },
    )
    assert created.status_code == 201
    body = _book(http).json()
    assert (body["bookState"], body["errorMssgLang"]) == (-12, "ERROR_ANTELACION_CLIENTE")


def test_admin_rejects_a_malformed_class(http):
    response = http.post("/_sandbox/classes", json={"day": DAY})
    assert response.status_code == 400
    assert "error" in response.json()


def test_sessions_admin_sets_credits(http):
    http.post("/_sandbox/sessions", json={"cookie": "bob", "credits": 0})
    assert _state(_book(http, "bob")) == -2


def test_listing_and_cancel_round_trip(http, sandbox):
    reservation = _book(http).json()["id"]
    params = {"day": DAY, "box": sandbox.box_id()}
    rows = http.get("/api/bookings", params=params, headers={"Cookie": "amhrdrauth=alice"})
    assert [(r["id"], r["bookState"], r["idres"]) for r in rows.json()["bookings"]] == [
        ("101", 1, reservation)
    ]
    cancel = http.post(
        "/api/cancelBook",
        data={"id": reservation, "late": "0"},
        headers={"Cookie": "amhrdrauth=alice"},
    )
    assert cancel.json() == {"cancelState": 1}
    assert _state(_book(http)) == 1


def test_arrivals_are_recorded_and_cleared(http):
    before = time.time_ns()
    _book(http, "alice")
    _book(http, "alice")
    arrivals = http.get("/_sandbox/arrivals").json()
    assert [(a["user"], a["book_state"], a["class_id"], a["day"]) for a in arrivals] == [
        ("alice", 1, "101", DAY),
        ("alice", -12, "101", DAY),
    ]
    assert all(a["at_ns"] >= before for a in arrivals)
    http.delete("/_sandbox/arrivals")
    assert http.get("/_sandbox/arrivals").json() == []


def test_reset_forgets_bookings(http):
    _book(http)
    http.post("/_sandbox/reset")
    assert http.get("/_sandbox/state").json()["bookings"] == []
    assert _state(_book(http)) == 1


def test_error_500_does_not_book(http: httpx.Client, sandbox: Sandbox) -> None:
    http.post("/_sandbox/faults", json={"mode": "error_500", "count": 1})
    assert _book(http).status_code == 500
    assert sandbox.bookings() == []
    assert _state(_book(http)) == 1


def test_fault_rate_through_the_admin_api(http: httpx.Client, sandbox: Sandbox) -> None:
    answer = http.post("/_sandbox/faults", json={"mode": "error_500", "rate": 0.5, "seed": 3})
    assert answer.json() == {"mode": "error_500", "count": None, "rate": 0.5}
    statuses = [_book(http, "alice", class_id=str(i)).status_code for i in range(40)]
    assert 0 < statuses.count(500) < 40
    assert len(sandbox.bookings()) == statuses.count(200)
    assert http.post("/_sandbox/faults", json={"mode": "error_500", "rate": 2}).status_code == 400


def test_timeout_books_then_hangs(sandbox: Sandbox) -> None:
    sandbox.set_fault("timeout", count=1, delay_ms=5000)
    with httpx.Client(base_url=sandbox.url, timeout=0.5) as short, pytest.raises(httpx.ReadTimeout):
        _book(short)
    assert [b["user"] for b in sandbox.bookings()] == ["alice"]


def test_slow_books_and_answers(http: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_fault("slow", count=1, delay_ms=50)
    assert _state(_book(http)) == 1


def test_garbage_books_but_answers_html(http: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_fault("garbage", count=1)
    response = _book(http)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    assert len(sandbox.bookings()) == 1


def test_many_concurrent_bookings_fill_exactly_the_capacity(sandbox: Sandbox) -> None:
    sandbox.add_class("101", DAY, capacity=20)
    limits = httpx.Limits(max_connections=100)
    with httpx.Client(base_url=sandbox.url, timeout=10.0, limits=limits) as http:
        with ThreadPoolExecutor(max_workers=50) as pool:
            states = list(pool.map(lambda i: _state(_book(http, f"u{i}")), range(100)))
    assert sorted(states).count(1) == 20
    assert states.count(-1) == 80
    assert len(sandbox.arrivals()) == 100


def test_box_comes_from_header_or_host(http: httpx.Client, sandbox: Sandbox) -> None:
    http.post(
        "/api/book",
        data={"id": "1", "day": DAY},
        headers={"Cookie": "amhrdrauth=a", "X-Sandbox-Box": "boxa"},
    )
    assert sandbox.arrivals()[0]["box"] == "boxa"
    assert box_from_host("crossfit.aimharder.com") == "crossfit"
    assert box_from_host("127.0.0.1:8090") == "sandbox"
    assert box_from_host("localhost:8090") == "sandbox"
    assert box_from_host(None) == "sandbox"


def test_strict_sessions_need_registration() -> None:
    with run_sandbox(accept_any_session=False) as strict, httpx.Client(base_url=strict.url) as http:
        assert _book(http, "alice").json() == {"logout": 1}
        strict.add_session("alice")
        assert _state(_book(http, "alice")) == 1


def test_module_runs_from_the_command_line() -> None:
    with run_sandbox() as probe:
        port = int(probe.url.rsplit(":", 1)[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "aimharder_sandbox", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert f":{port}" in proc.stdout.readline()
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/book",
            data={"id": "1", "day": DAY},
            headers={"Cookie": "amhrdrauth=a"},
        )
        assert response.json()["bookState"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
