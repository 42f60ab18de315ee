"""qstash_dev driven by the official JavaScript SDK (`@upstash/qstash`, pinned in js/).

`make js-sdk` installs it with `npm ci` and `make test` depends on that target. Nothing here
skips: without Node or the installed SDK the tests fail and say what to run. Each script in js/
covers one endpoint family against a fresh server, with every destination on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS_DIR = Path(__file__).parent / "js"
PINNED = "2.12.0"
SCRIPTS = [
    "publish",
    "messages",
    "dlq",
    "flow_control",
    "logs",
    "queues",
    "schedules",
    "url_groups",
]

pytestmark = pytest.mark.timeout(120)


def _require_sdk() -> None:
    """Fail (never skip) when Node or the pinned SDK is missing."""
    assert shutil.which("node"), "node is not on PATH: install Node.js 18+, then `make js-sdk`"
    manifest = JS_DIR / "node_modules" / "@upstash" / "qstash" / "package.json"
    assert manifest.is_file(), f"the JS SDK is not installed in {JS_DIR}: run `make js-sdk`"
    installed = json.loads(manifest.read_text())["version"]
    assert installed == PINNED, f"{installed} installed, {PINNED} pinned: run `make js-sdk`"


def test_the_lock_pins_the_sdk_version():
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@upstash/qstash"]["version"] == PINNED
    assert json.loads((JS_DIR / "package.json").read_text())["dependencies"] == {
        "@upstash/qstash": PINNED
    }


def test_every_script_is_run():
    scripts = {p.stem for p in JS_DIR.glob("*.mjs")} - {"lib"}
    assert scripts == set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_official_js_sdk_works_unchanged(srv, script):
    _require_sdk()
    env = dict(
        os.environ,
        QSTASH_URL=srv.url,
        QSTASH_TOKEN=srv.token,
        QSTASH_CURRENT_SIGNING_KEY=srv.current_signing_key,
        QSTASH_NEXT_SIGNING_KEY=srv.next_signing_key,
    )
    done = subprocess.run(
        ["node", f"{script}.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK "), done.stdout + done.stderr
