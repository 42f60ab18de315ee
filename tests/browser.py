"""Real-browser helpers: serve an app over HTTP, put a bearer-adding proxy in front, drive Chromium.

Chromium's command line cannot send an Authorization header, so the page is loaded through a
small local proxy that adds it (as an operator's authenticating reverse proxy would); the app
still checks the token on every request. Interactive tests (the login form) drive the same
system Chromium through Playwright (`browser_page()`); Playwright downloads no browser here.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from werkzeug.serving import make_server

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-proxy-server",
    "--hide-scrollbars",
)


class ChromiumMissing(RuntimeError):
    """No Chromium on PATH (scripts/ensure-chromium.sh installs Debian's)."""


def find_chromium() -> str:
    """The Chromium binary.

    Raises:
        ChromiumMissing: none is installed.
    """
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumMissing(
        "Chromium is required for the parity page browser test and is not installed; "
        "run scripts/ensure-chromium.sh (Debian: apt-get install -y chromium)"
    )


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run `app` in a real threaded HTTP server on a free port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def bearer_proxy(upstream: str, token: str) -> Iterator[str]:
    """A local HTTP proxy that forwards GETs to `upstream` with `Authorization: Bearer token`."""
    client = httpx.Client(base_url=upstream, trust_env=False, timeout=30)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            answer = client.get(self.path, headers={"Authorization": f"Bearer {token}"})
            self.send_response(answer.status_code)
            self.send_header("Content-Type", answer.headers.get("content-type", "text/plain"))
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        client.close()


def chromium(url: str, *extra: str, size: tuple[int, int] = (1280, 1600)) -> str:
    """Run headless Chromium on `url` with `extra` flags (--dump-dom, --screenshot=...)."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        args = [
            find_chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            *extra,
            url,
        ]
        done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


@contextmanager
def browser_page() -> Iterator[tuple[Any, Any]]:
    """A fresh headless Chromium context and page (Playwright over the system Chromium)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=find_chromium(), args=["--no-sandbox", "--no-proxy-server"]
        )
        try:
            context = browser.new_context()
            yield context, context.new_page()
        finally:
            browser.close()


def dump_dom(url: str) -> str:
    """The DOM Chromium rendered for `url`, serialised."""
    return chromium(url, "--dump-dom")


def screenshot(url: str, target: Path, size: tuple[int, int] = (1280, 1600)) -> None:
    """A PNG of the page as Chromium renders it."""
    chromium(url, f"--screenshot={target}", size=size)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (raises ValueError if it is not a PNG)."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG")
    width, height = struct.unpack(">II", head[16:24])
    return width, height
