"""`make run`: the whole local stack in the foreground until Ctrl-C.

The app (gunicorn, 127.0.0.1:5000), the local QStash server (127.0.0.1:8080), the AimHarder
sandbox (127.0.0.1:8090) and the cron-job.org stand-in pinging the legacy endpoint every 60 s.
Ports: APP_PORT, QSTASH_PORT, AIMHARDER_PORT. A port that is taken stops the stack before
anything starts, with a message naming it.

Local secrets are generated once into instance/dev.env, and the stack's settings (URLs,
QSTASH_ENABLED, ...) are written there on every run, so `flask --app wsgi ...` in another
shell sees what the stack runs with. The environment or a `.env` file overrides anything.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flask_app.config import DEV_ENV_FILE, DEV_QSTASH_TOKEN  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SANDBOX_BOX_ID = "10122"  # the sandbox box's numeric id (booking_data.box_id)
PORTS = {"APP_PORT": 5000, "QSTASH_PORT": 8080, "AIMHARDER_PORT": 8090}
_STACK_MARK = "# --- written by `make run` on every start (the stack's settings) ---"


class PortTaken(SystemExit):
    """A port the stack needs is in use."""


def dev_env_path() -> Path:
    """instance/dev.env, or DEV_ENV_FILE (relative to the project root) when set."""
    return ROOT / (os.environ.get("DEV_ENV_FILE") or DEV_ENV_FILE)


def ports() -> dict[str, int]:
    """The ports the stack listens on.

    Raises:
        SystemExit: a port variable is not a port number.
    """
    found = {}
    for name, default in PORTS.items():
        raw = os.environ.get(name, str(default))
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise SystemExit(f"{name} must be a port number (1-65535), not {raw!r}")
        found[name] = int(raw)
    return found


def check_ports_free(wanted: dict[str, int]) -> None:
    """Fail before starting anything when a port is taken (e.g. by another `make run`).

    Raises:
        PortTaken: naming the port, its variable and what to do.
    """
    for name, port in wanted.items():
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                raise PortTaken(
                    f"port {port} ({name}) is already in use on 127.0.0.1: is another "
                    f"`make run` running? Stop it, or pick another port: {name}={port + 1} make run"
                ) from None


def dev_secrets(path: Path) -> dict[str, str]:
    """Local-only secrets, generated once and kept in dev.env (new ones added when missing)."""
    found = read_env(path)
    wanted = {
        "API_TOKEN": lambda: f"dev-{secrets.token_urlsafe(18)}",
        "CRON_SECRET": lambda: f"cron-{secrets.token_urlsafe(18)}",
        "SESSION_ENCRYPTION_KEYS": lambda: Fernet.generate_key().decode(),
        "SECRET_KEY": lambda: secrets.token_urlsafe(32),
        "NOTIFY_SIGNING_SECRET": lambda: f"notify-{secrets.token_urlsafe(32)}",
    }
    return {name: found.get(name) or make() for name, make in wanted.items()}


def read_env(path: Path) -> dict[str, str]:
    """KEY=value lines of a dev.env (comments and blank lines skipped)."""
    if not path.exists():
        return {}
    lines = (ln for ln in path.read_text().splitlines() if "=" in ln and not ln.startswith("#"))
    return {k.strip(): v.strip() for k, v in (ln.split("=", 1) for ln in lines)}


def stack_settings(found: dict[str, int]) -> dict[str, str]:
    """What every process of the stack runs with, unless the environment says otherwise."""
    defaults = {
        "APP_BASE_URL": f"http://127.0.0.1:{found['APP_PORT']}",
        "QSTASH_URL": f"http://127.0.0.1:{found['QSTASH_PORT']}",
        "AIMHARDER_BASE_URL": f"http://127.0.0.1:{found['AIMHARDER_PORT']}",
        "QSTASH_ENABLED": "true",
        "LEGACY_CRON_ENABLED": "true",
    }
    return {name: os.environ.get(name, value) for name, value in defaults.items()}


def write_dev_env(path: Path, kept: dict[str, str], stack: dict[str, str]) -> None:
    """The secrets (kept across runs), then the stack's current settings."""
    path.parent.mkdir(exist_ok=True)
    lines = ["# Local development only: `make run` and `flask --app wsgi ...` read this file."]
    lines += [f"{k}={v}" for k, v in kept.items()]
    lines += [_STACK_MARK, *(f"{k}={v}" for k, v in stack.items())]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def stack_env(kept: dict[str, str], stack: dict[str, str]) -> dict[str, str]:
    """The environment every process of the stack gets (the caller's wins)."""
    return kept | stack | {"PYTHONUNBUFFERED": "1"} | dict(os.environ)


def commands(found: dict[str, int]) -> dict[str, list[str]]:
    """Name → argv of each process."""
    app = [
        PY, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
        "-b", f"127.0.0.1:{found['APP_PORT']}", "wsgi:app",
    ]  # fmt: skip
    return {
        "qstash": [PY, "-m", "qstash_dev", "--port", str(found["QSTASH_PORT"])],
        "aimharder": [
            PY,
            "-m",
            "aimharder_sandbox",
            "--port",
            str(found["AIMHARDER_PORT"]),
            "--box-id",
            f"sandbox={SANDBOX_BOX_ID}",
        ],  # fmt: skip
        "app": app,
        "cron": [PY, "-m", "flask", "--app", "wsgi", "cron", "ping", "--every", "60"],
    }


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Until our own process answers (a process that died never counts as healthy)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with {proc.returncode} before it answered {url}")
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
  app              {base}            (health: {base}/api/health, ready: {base}/api/ready)
  admin page       {base}/admin/parity   (log in with $API_TOKEN at {base}/admin/login)
  API description  {base}/api/openapi.json
  local QStash     {env["QSTASH_URL"]}
  AimHarder        {env["AIMHARDER_BASE_URL"]}  (sandbox; state at /_sandbox/state)
  cron stand-in    pings {base}/api/cron/prebooking-scheduler at :00 of every minute

Tokens (local only, from {DEV_ENV_FILE}; `flask --app wsgi ...` reads that file too):
  export API_TOKEN={env["API_TOKEN"]}
  export CRON_SECRET={env["CRON_SECRET"]}
  QSTASH_TOKEN={env.get("QSTASH_TOKEN", DEV_QSTASH_TOKEN)}

Try it:
  curl -s -X PUT {base}/api/sessions/ana@example.com -H "Authorization: Bearer $API_TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"cookies": {{"amhrdrauth": "demo"}}}}'
  curl -s -X POST {base}/api/prebookings -H "Authorization: Bearer $API_TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"user_email": "ana@example.com",
       "available_at": "'$(date -u -d '+15 seconds' +%FT%TZ)'",
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


def prepare() -> tuple[dict[str, int], dict[str, str]]:
    """Ports checked free, dev.env written; the ports and the stack's environment.

    Raises:
        SystemExit: a bad or taken port (nothing was started).
    """
    found = ports()
    check_ports_free(found)
    path = dev_env_path()
    kept, stack = dev_secrets(path), stack_settings(found)
    write_dev_env(path, kept, stack)
    return found, stack_env(kept, stack)


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        found, env = prepare()
    except SystemExit as exc:
        print(f"make run: {exc}", file=sys.stderr, flush=True)
        return 1
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, argv in commands(found).items():
            procs[name] = subprocess.Popen(argv, cwd=ROOT, env=env, preexec_fn=_die_with_parent)
            if name == "app":
                wait_healthy(env["APP_BASE_URL"] + "/api/health", procs[name])
        time.sleep(0.5)  # a process that cannot start usually dies within this
        dead = [name for name, proc in procs.items() if proc.poll() is not None]
        if dead:
            print(f"{', '.join(dead)} exited at start; stopping the stack", flush=True)
            return 1
        print(banner(env), flush=True)
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping the stack", flush=True)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except SystemExit as exc:
        print(f"make run: {exc}", file=sys.stderr, flush=True)
        return 1
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
