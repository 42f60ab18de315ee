"""The parity page in a real headless Chromium, served over HTTP behind a bearer-adding proxy."""

import shutil
from datetime import UTC, datetime

import pytest

from tests.browser import (
    ChromiumMissing,
    bearer_proxy,
    browser_page,
    dump_dom,
    find_chromium,
    png_size,
    serve,
)
from tests.browser import screenshot as take_screenshot
from tests.conftest import API_TOKEN
from tests.fakes import FakeClock
from tests.parity_sim import simulate

END = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def db_url(tmp_path, sqlite_template):
    """SQLite only: the page is the same on both backends, and a browser run takes seconds."""
    path = tmp_path / "t.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def clock():
    return FakeClock(END)


@pytest.fixture
def app_overrides(clock):
    return {"CLOCK": clock}


@pytest.fixture(autouse=True)
def chromium_installed():
    try:
        find_chromium()
    except ChromiumMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture
def proxy(app, clock, booking_client):
    simulate(app, clock, booking_client, end=END, count=60, seed=3)
    with serve(app) as base, bearer_proxy(base, API_TOKEN) as url:
        yield url


def test_chromium_renders_the_plots_of_the_parity_page(proxy):
    dom = dump_dom(f"{proxy}/admin/parity?since=24h")
    assert dom.count('<svg class="hist"') == 3
    for path in ("cron", "qstash", "shadow"):
        assert f'data-path="{path}"' in dom
    assert '<svg id="wins"' in dom and 'class="win" data-path="qstash"' in dom
    assert dom.count('class="bar"') >= 3 * 18
    assert 'id="verdict"' in dom and "READY" in dom


def test_chromium_without_credentials_gets_the_login_form(app):
    with serve(app) as base:
        dom = dump_dom(f"{base}/admin/parity")
    assert '<form method="post" action="/admin/login"' in dom and "<svg" not in dom


@pytest.fixture
def served(app, clock, booking_client):
    simulate(app, clock, booking_client, end=END, count=60, seed=3)
    with serve(app) as base:
        yield base


def test_chromium_logs_in_with_the_form_and_keeps_a_strict_httponly_secure_cookie(served):
    with browser_page() as (context, page):
        page.goto(f"{served}/admin/parity?since=24h")
        assert page.url == f"{served}/admin/login?next=%2Fadmin%2Fparity%3Fsince%3D24h"
        page.fill("#token", "not-the-token")
        page.click("#submit")
        assert "not a valid admin token" in page.inner_text("#problem")
        page.fill("#token", API_TOKEN)
        page.click("#submit")
        page.wait_for_selector("#verdict")
        assert page.url == f"{served}/admin/parity?since=24h"
        assert page.locator('svg[class="hist"]').count() == 3
        (cookie,) = [c for c in context.cookies() if c["name"] == "admin_session"]
        # Chromium keeps a Secure cookie from http://127.0.0.1: loopback is a secure context.
        assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"]) == (True, True, "Strict")
        assert "admin_session" not in page.evaluate("document.cookie")
        # A state change without the form's CSRF token is refused; the session survives it.
        status = page.evaluate("fetch('/admin/logout', {method: 'POST'}).then(r => r.status)")
        assert status == 400
        page.goto(f"{served}/admin/parity?since=24h")
        assert page.url.endswith("/admin/parity?since=24h")


def test_chromium_screenshot_of_the_page_is_a_full_size_png(proxy, tmp_path):
    target = tmp_path / "parity.png"
    take_screenshot(f"{proxy}/admin/parity?since=24h", target, size=(1280, 1600))
    assert png_size(target) == (1280, 1600)
    assert target.stat().st_size > 20_000  # a blank page of this size compresses to ~5 kB
