"""`make run`: the whole local stack in the foreground until Ctrl-C.

The app (gunicorn, 127.0.0.1:5000), the local QStash server (127.0.0.1:8080), the AimHarder
sandbox (127.0.0.1:8090) and the cron-job.org stand-in pinging the legacy endpoint every 60 s.
Secrets for local use are generated once into instance/dev.env; a `.env` file or the
environment overrides anything.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flask_app.config import DEV_QSTASH_TOKEN  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEV_ENV = ROOT / "instance" / "dev.env"
PY = sys.executable
SANDBOX_BOX_ID = "10122"  # the sandbox box's numeric id (booking_data.box_id)


def dev_secrets() -> dict[str, str]:
    """Local-only secrets, generated on first run and kept in instance/dev.env."""
    if not DEV_ENV.exists():
        DEV_ENV.parent.mkdir(exist_ok=True)
        DEV_ENV.write_text(
            f"API_TOKEN=dev-{secrets.token_urlsafe(18)}\n"
            f"CRON_SECRET=cron-{secrets.token_urlsafe(18)}\n"
            f"SESSION_ENCRYPTION_KEYS={Fernet.generate_key().decode()}\n"
        )
        DEV_ENV.chmod(0o600)
    if "NOTIFY_SIGNING_SECRET=" not in DEV_ENV.read_text():  # added after the first files
        with DEV_ENV.open("a") as env_file:
            env_file.write(f"NOTIFY_SIGNING_SECRET=notify-{secrets.token_urlsafe(32)}\n")
    pairs = (line.split("=", 1) for line in DEV_ENV.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def stack_env() -> dict[str, str]:
    """The environment every process of the stack gets (the caller's wins)."""
    app_port = os.environ.get("APP_PORT", "5000")
    defaults = dev_secrets() | {
        "APP_BASE_URL": f"http://127.0.0.1:{app_port}",
        "QSTASH_URL": "http://127.0.0.1:8080",
        "QSTASH_ENABLED": "true",
        "LEGACY_CRON_ENABLED": "true",
        "AIMHARDER_BASE_URL": "http://127.0.0.1:8090",
        "PYTHONUNBUFFERED": "1",
    }
    return defaults | dict(os.environ)


def commands(env: dict[str, str]) -> dict[str, list[str]]:
    """Name → argv of each process."""
    port = env["APP_BASE_URL"].rsplit(":", 1)[-1]
    app = [
        PY,
        "-m",
        "gunicorn",
        "-c",
        str(ROOT / "gunicorn.conf.py"),
        "-b",
        f"127.0.0.1:{port}",
        "wsgi:app",
    ]
    if not (ROOT / "gunicorn.conf.py").exists():
        app = [PY, "-m", "flask", "--app", "wsgi", "run", "-p", port, "--with-threads"]
    return {
        "qstash": [PY, "-m", "qstash_dev", "--port", "8080"],
        "aimharder": [
            PY,
            "-m",
            "aimharder_sandbox",
            "--port",
            "8090",
            "--box-id",
            f"sandbox={SANDBOX_BOX_ID}",
        ],
        "app": app,
        "cron": [PY, "-m", "flask", "--app", "wsgi", "cron", "ping", "--every", "60"],
    }


def wait_healthy(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not come up within {timeout_s:.0f} s")


def banner(env: dict[str, str]) -> str:
    base = env["APP_BASE_URL"]
    return f"""
Local stack is up (Ctrl-C stops everything):
  app              {base}            (health: {base}/api/health)
  parity page      {base}/admin/parity   (send Authorization: Bearer $API_TOKEN)
  local QStash     {env["QSTASH_URL"]}
  AimHarder        {env["AIMHARDER_BASE_URL"]}  (sandbox; state at /_sandbox/state)
  cron stand-in    pings {base}/api/cron/prebooking-scheduler at :00 of every minute

Tokens (local only, from instance/dev.env):
  export API_TOKEN={env["API_TOKEN"]}
  export CRON_SECRET={env["CRON_SECRET"]}
  QSTASH_TOKEN={env.get("QSTASH_TOKEN", DEV_QSTASH_TOKEN)}

Try it:
  curl -s -X PUT {base}/api/sessions/ana@example.com -H "Authorization: Bearer $API_TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"cookies": {{"amhrdrauth": "demo"}}}}'
  curl -s -X POST {base}/api/prebookings -H "Authorization: Bearer $API_TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"user_email": "ana@example.com",
       "available_at": "'$(date -u -d '+30 seconds' +%Y-%m-%dT%H:%M:%S+00:00)'",
       "booking_data": {{"box": "sandbox", "box_id": "{SANDBOX_BOX_ID}", "class_id": "1001",
                         "day": "'$(date -u +%Y%m%d)'"}}}}'
  curl -s {base}/api/prebookings -H "Authorization: Bearer $API_TOKEN"
"""


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # `make run` stopped by SIGTERM cleans up like Ctrl-C


def _die_with_parent() -> None:
    # Linux: children get SIGTERM if this runner dies without cleaning up (e.g. SIGKILL).
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    env = stack_env()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, argv in commands(env).items():
            procs[name] = subprocess.Popen(argv, cwd=ROOT, env=env, preexec_fn=_die_with_parent)
            if name == "app":
                wait_healthy(env["APP_BASE_URL"] + "/api/health")
        print(banner(env), flush=True)
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping the stack", flush=True)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
