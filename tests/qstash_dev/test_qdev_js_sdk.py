"""Smoke test with the official JavaScript SDK, when Node and npm are available."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

JS_DIR = Path(__file__).parent / "js"
PACKAGE = "@upstash/qstash@2.12.0"

pytestmark = pytest.mark.timeout(120)


def _install() -> str | None:
    """Install the SDK into tests/qstash_dev/js/node_modules; return why not, if it failed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not installed"
    if (JS_DIR / "node_modules" / "@upstash" / "qstash").is_dir():
        return None
    cmd = ["npm", "install", "--no-save", "--no-audit", "--no-fund", PACKAGE]
    try:
        done = subprocess.run(cmd, cwd=JS_DIR, capture_output=True, text=True, timeout=90)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"npm install failed: {exc}"
    return None if done.returncode == 0 else f"npm install failed: {done.stderr[-500:]}"


def test_javascript_sdk_smoke(srv):
    reason = _install()
    if reason is not None:
        print(reason)
        pytest.skip(reason)
    env = dict(
        os.environ,
        QSTASH_URL=srv.url,
        QSTASH_TOKEN=srv.token,
        QSTASH_CURRENT_SIGNING_KEY=srv.current_signing_key,
        QSTASH_NEXT_SIGNING_KEY=srv.next_signing_key,
    )
    done = subprocess.run(
        ["node", "smoke.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK ")
