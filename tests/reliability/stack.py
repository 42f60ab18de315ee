"""The real local stack for reliability scenarios: private databases, gunicorn, a private cluster.

Everything listens on 127.0.0.1 and every wait is bounded. Missing prerequisites fail loudly.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from flask_app.dbschema import upgrade
from tests.conftest import API_TOKEN, CRON_SECRET, POSTGRES_ADMIN_URL

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
CRON_AUTH = {"Authorization": f"Bearer {CRON_SECRET}"}
CRON_URL = "/api/cron/prebooking-scheduler"
EXECUTE_URL = "/api/qstash/prebooking-execute"


def free_port() -> int:
    """A port that was free a moment ago (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_until(predicate: Any, what: str, timeout_s: float = 60.0, every_s: float = 0.05) -> None:
    """Poll `predicate` until true; fail the test saying what never happened."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def sa_url(libpq_url: str) -> str:
    """The SQLAlchemy spelling of a postgresql:// URL (psycopg 3 driver)."""
    return libpq_url.replace("postgresql://", "postgresql+psycopg://", 1)


@contextmanager
def private_database(admin_url: str = POSTGRES_ADMIN_URL) -> Iterator[str]:
    """A fresh, migrated database next to `admin_url`'s; dropped afterwards."""
    name = f"prebook_rel_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for this scenario and is not reachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = sa_url(admin_url.rsplit("/", 1)[0] + f"/{name}")
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the app under gunicorn -------------------------------------------------------------------


@dataclass
class Gunicorn:
    """A running `gunicorn -c gunicorn.conf.py wsgi:app` and how to reach it."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def worker_pids(self) -> list[int]:
        """The master's children (its workers), from /proc."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def log(self) -> str:
        """The server's stderr so far (for failure messages)."""
        return self.log_path.read_text(errors="replace")[-4000:]


def app_env(**values: object) -> dict[str, str]:
    """The environment of an app process: ours, minus anything that would leak in, plus values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QSTASH", "GUNICORN"))}
    env.update({k: str(v) for k, v in values.items() if v is not None})
    env["PYTHONPATH"] = str(ROOT)
    return env


@contextmanager
def gunicorn(env: Mapping[str, str], tmp_path: Path, *, workers: int = 2) -> Iterator[Gunicorn]:
    """Serve the app with the repo's gunicorn.conf.py on a free loopback port."""
    port = int(env.get("_PORT") or free_port())
    full = dict(env) | {
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(workers),
        "APP_BASE_URL": env.get("APP_BASE_URL") or f"http://127.0.0.1:{port}",
    }
    full.pop("_PORT", None)
    log_path = tmp_path / f"gunicorn-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Gunicorn(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_healthy(server, workers)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_healthy(server: Gunicorn, workers: int) -> None:
    def healthy() -> bool:
        if server.process.poll() is not None:
            pytest.fail(f"gunicorn exited with {server.process.returncode}:\n{server.log()}")
        try:
            ok = httpx.get(server.url + "/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
        return ok and len(server.worker_pids()) == workers

    wait_until(healthy, "gunicorn to answer /api/health", timeout_s=60)


# --- a private PostgreSQL cluster (restartable without touching the shared one) ---------------


@dataclass
class Cluster:
    """A PostgreSQL instance of our own: data dir, port, and pg_ctl around it."""

    data: Path
    port: int
    socket_dir: Path
    log: Path
    max_connections: int = 100

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        cmd = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60"]
        opts = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
            f" -c max_connections={self.max_connections}"
        )
        _as_postgres([*cmd, "-o", opts, *args])

    def start(self) -> None:
        self._pg_ctl("start")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        self._pg_ctl("-m", "fast", "restart")


def _as_postgres(cmd: list[str]) -> None:
    runner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    done = subprocess.run([*runner, *cmd], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd[:2])} failed ({done.returncode}): {done.stderr or done.stdout}")


@contextmanager
def private_cluster(max_connections: int = 100) -> Iterator[Cluster]:
    """initdb into a temp dir, start on a free port, stop and delete afterwards."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"this scenario needs the PostgreSQL 15 server binaries in {PG_BIN}")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.fail("running as root needs `runuser` to start PostgreSQL as the postgres user")
    base = Path(tempfile.mkdtemp(prefix="pg-reliability-"))
    base.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    cluster = Cluster(base / "data", free_port(), base, base / "postgres.log", max_connections)
    _as_postgres(
        [str(PG_BIN / "initdb"), "-D", str(cluster.data), "-U", "postgres", "-A", "trust", "-N"]
    )
    cluster.start()
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)
