"""Render the parity page for a simulated parallel-phase run and screenshot it in Chromium.

    .venv/bin/python scripts/parity_screenshot.py [docs/img/parity.png]

Builds a throwaway SQLite database, runs 240 prebookings through the real execution core
(fake AimHarder, fake clock; see tests/parity_sim.py), serves the app over HTTP behind a
bearer-adding proxy and saves Chromium's screenshot. Prints the Markdown report of the run.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.fernet import Fernet  # noqa: E402

from flask_app import create_app  # noqa: E402
from flask_app.dbschema import upgrade  # noqa: E402
from tests.browser import bearer_proxy, png_size, screenshot, serve  # noqa: E402
from tests.fakes import FakeBookingClient, FakeClock  # noqa: E402
from tests.parity_sim import simulate  # noqa: E402

END = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TOKEN = "demo-api-token"


def main(target: Path) -> None:
    """Simulate, render, screenshot."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'parity.db'}"
        upgrade(url)
        clock, client = FakeClock(END), FakeBookingClient()
        app = create_app(
            {
                "DATABASE_URL": url,
                "API_TOKEN": TOKEN,
                "SESSION_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
                "AIMHARDER_CLIENT": client,
                "CLOCK": clock,
            }
        )
        logging.getLogger("flask_app.observe.comparison").setLevel(logging.WARNING)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        simulate(app, clock, client, end=END, count=240, seed=7)
        target.parent.mkdir(parents=True, exist_ok=True)
        with serve(app) as base, bearer_proxy(base, TOKEN) as proxy:
            screenshot(f"{proxy}/admin/parity?since=24h", target, size=(1280, 2200))
        print(app.test_cli_runner().invoke(args=["parity", "report", "--since", "24h"]).output)
        app.extensions["db"].engine.dispose()
    print(f"saved {target} {png_size(target)}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img" / "parity.png")
