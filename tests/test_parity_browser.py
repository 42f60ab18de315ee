"""The parity page in a real headless Chromium, served over HTTP behind a bearer-adding proxy."""

import shutil
from datetime import UTC, datetime

import pytest

from tests.browser import ChromiumMissing, bearer_proxy, dump_dom, find_chromium, png_size, serve
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


def test_chromium_without_the_token_gets_the_401_error(app):
    with serve(app) as base:
        dom = dump_dom(f"{base}/admin/parity")
    assert "missing bearer token" in dom and "<svg" not in dom


def test_chromium_screenshot_of_the_page_is_a_full_size_png(proxy, tmp_path):
    target = tmp_path / "parity.png"
    take_screenshot(f"{proxy}/admin/parity?since=24h", target, size=(1280, 1600))
    assert png_size(target) == (1280, 1600)
    assert target.stat().st_size > 20_000  # a blank page of this size compresses to ~5 kB
