"""`flask cron ping`: the local cron-job.org stand-in (alignment, lines, and a real server)."""

import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from freezegun import freeze_time
from werkzeug.serving import make_server

from flask_app.core.dispatch import get_dispatcher
from legacy_cron.cli import Pinger, next_slot
from tests.conftest import CRON_SECRET
from tests.factories import make_prebooking, store_session

URL = "http://app.test/api/cron/prebooking-scheduler"
TICK = {"ran": True, "due": 2, "claimed": 2, "lost_claim": 0, "deferred": 0,
        "duration_ms": 7}  # fmt: skip


@pytest.mark.parametrize(
    ("now", "every_s", "expected"),
    [
        ("2026-11-25T01:00:42.500", 60, "2026-11-25T01:01:00"),
        ("2026-11-25T01:00:00", 60, "2026-11-25T01:01:00"),  # a slot just served: the next one
        ("2026-11-25T01:59:59.999", 60, "2026-11-25T02:00:00"),
        ("2026-11-25T01:00:07", 15, "2026-11-25T01:00:15"),
    ],
)
def test_next_slot_is_the_next_wall_clock_multiple(now, every_s, expected):
    at = datetime.fromisoformat(now).replace(tzinfo=UTC)
    got = next_slot(at, timedelta(seconds=every_s))
    assert got == datetime.fromisoformat(expected).replace(tzinfo=UTC)


def fake_http(answer, seen, frozen=None):
    def handler(request):
        seen.append((datetime.now(UTC), request))
        if frozen is not None:
            frozen.tick(timedelta(seconds=3))  # a slow tick must not shift the next ping
        return answer(request)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_pings_fire_at_second_zero_of_each_minute_with_the_secret():
    seen, lines = [], []
    with freeze_time("2026-11-25 01:00:42.5") as frozen:
        http = fake_http(lambda r: httpx.Response(200, json=TICK), seen, frozen)
        pinger = Pinger(
            URL,
            CRON_SECRET,
            http,
            now=lambda: datetime.now(UTC),
            sleep=lambda s: frozen.tick(timedelta(seconds=s)),
            echo=lines.append,
        )
        pinger.run(count=3)
    minute = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    assert [at for at, _ in seen] == [minute + timedelta(minutes=m) for m in (1, 2, 3)]
    assert {r.headers["Authorization"] for _, r in seen} == {f"Bearer {CRON_SECRET}"}
    assert {r.method for _, r in seen} == {"POST"}
    assert lines[0] == (
        f"2026-11-25T01:01:00+00:00 POST {URL} -> 200 ok due=2 claimed=2 lost_claim=0 "
        "deferred=0 in 7 ms"
    )


def test_without_alignment_pings_start_now_and_repeat_every_interval():
    seen = []
    with freeze_time("2026-11-25 01:00:42.5") as frozen:
        http = fake_http(lambda r: httpx.Response(200, json=TICK), seen)
        pinger = Pinger(
            URL,
            CRON_SECRET,
            http,
            every=timedelta(seconds=10),
            align=False,
            now=lambda: datetime.now(UTC),
            sleep=lambda s: frozen.tick(timedelta(seconds=s)),
            echo=lambda line: None,
        )
        pinger.run(count=3)
    start = datetime(2026, 11, 25, 1, 0, 42, 500000, tzinfo=UTC)
    assert [at for at, _ in seen] == [start + timedelta(seconds=s) for s in (0, 10, 20)]


OFF = "LEGACY_CRON_ENABLED is false"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (lambda r: httpx.Response(401, json={"error": "invalid bearer token"}),
         "-> 401 FAILED (invalid bearer token)"),
        (lambda r: httpx.Response(308, headers={"Location": "/x/"}),
         "-> 308 FAILED (Permanent Redirect)"),
        (lambda r: httpx.Response(200, json={"ran": False, "reason": OFF}),
         "-> 200 ok, not run: LEGACY_CRON_ENABLED is false"),
    ],
)  # fmt: skip
def test_each_ping_prints_one_line_and_anything_but_2xx_is_a_failure(answer, expected):
    pinger = Pinger(URL, CRON_SECRET, fake_http(answer, []))
    assert pinger.ping().endswith(expected)


def test_a_network_error_is_a_failed_line_not_a_crash():
    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    pinger = Pinger(URL, None, httpx.Client(transport=httpx.MockTransport(refuse)))
    assert pinger.ping().endswith(f"POST {URL} -> FAILED (ConnectError)")


@pytest.fixture
def server(app):
    """The app served over real HTTP on a free port."""
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    thread.join(5)


def test_the_cron_ping_command_runs_a_real_tick(app, runner, server, booking_client):
    with app.extensions["db"].session() as session:
        store_session(app, session)
        make_prebooking(session)
    url = server + "/api/cron/prebooking-scheduler"
    result = runner.invoke(args=["cron", "ping", "--count", "1", "--no-align", "--url", url])
    assert result.exit_code == 0, result.output
    assert f"POST {url} -> 200 ok due=1 claimed=1" in result.output
    assert get_dispatcher(app).wait_idle(30) and len(booking_client.calls) == 1


def test_the_cron_ping_command_defaults_to_the_app_base_url(app, runner, server):
    app.config["APP_BASE_URL"] = server + "/"
    result = runner.invoke(args=["cron", "ping", "--count", "1", "--no-align"])
    assert result.exit_code == 0, result.output
    assert f"POST {server}/api/cron/prebooking-scheduler -> 200 ok due=0" in result.output


def test_the_cron_ping_command_warns_when_the_secret_is_unset(app, runner, server):
    app.config["CRON_SECRET"] = None
    url = server + "/api/cron/prebooking-scheduler"
    result = runner.invoke(args=["cron", "ping", "--count", "1", "--no-align", "--url", url])
    assert "warning: CRON_SECRET is not set" in result.output
    assert "-> 503 FAILED (CRON_SECRET is not configured" in result.output


def test_the_cron_ping_command_rejects_a_non_positive_interval(runner):
    result = runner.invoke(args=["cron", "ping", "--every", "0", "--count", "1"])
    assert result.exit_code != 0 and "--every" in result.output
