"""`make run` (scripts/devstack.py): configurable ports, a taken port reported before anything
starts, and dev.env holding the stack's settings so `flask --app wsgi ...` sees them."""

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flask_app import config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def devstack(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("devstack", ROOT / "scripts" / "devstack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("DEV_ENV_FILE", str(tmp_path / "dev.env"))
    for name in ("APP_PORT", "QSTASH_PORT", "AIMHARDER_PORT", "QSTASH_ENABLED", "API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return module


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_taken_port_stops_make_run_before_anything_starts(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {
            "PATH": "/usr/bin:/bin",
            "APP_PORT": str(port),
            "QSTASH_PORT": str(free_port()),
            "AIMHARDER_PORT": str(free_port()),
            "DEV_ENV_FILE": str(tmp_path / "dev.env"),
        }
        done = subprocess.run(
            [sys.executable, "scripts/devstack.py"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"port {port} (APP_PORT) is already in use" in done.stderr
    assert f"APP_PORT={port + 1} make run" in done.stderr
    assert "Local stack is up" not in done.stdout
    assert not (tmp_path / "dev.env").exists()  # nothing was started or written


def test_ports_come_from_the_environment(devstack, monkeypatch):
    monkeypatch.setenv("APP_PORT", "5100")
    monkeypatch.setenv("QSTASH_PORT", "8180")
    found = devstack.ports()
    assert found == {"APP_PORT": 5100, "QSTASH_PORT": 8180, "AIMHARDER_PORT": 8090}
    commands = devstack.commands(found)
    assert commands["app"][-2:] == ["127.0.0.1:5100", "wsgi:app"]
    assert commands["qstash"][-1] == "8180"


def test_a_port_that_is_no_number_is_named(devstack, monkeypatch):
    monkeypatch.setenv("QSTASH_PORT", "eighty")
    with pytest.raises(SystemExit, match="QSTASH_PORT must be a port number"):
        devstack.ports()


def test_dev_env_holds_the_stacks_settings_for_the_cli(devstack, monkeypatch, tmp_path):
    for name in devstack.PORTS:
        monkeypatch.setenv(name, str(free_port()))
    found, env = devstack.prepare()
    first = devstack.read_env(tmp_path / "dev.env")
    assert first["QSTASH_ENABLED"] == "true"
    assert first["APP_BASE_URL"] == f"http://127.0.0.1:{found['APP_PORT']}"
    assert len(first["SECRET_KEY"]) >= 32 and first["API_TOKEN"].startswith("dev-")
    assert env["API_TOKEN"] == first["API_TOKEN"]
    # What `flask --app wsgi ...` reads (config.read_environment) is a valid configuration.
    environ = config.read_environment(ROOT)
    assert environ["QSTASH_ENABLED"] == "true" and environ["API_TOKEN"] == first["API_TOKEN"]
    assert config.settings_from_env(environ)["QSTASH_ENABLED"] is True
    devstack.prepare()  # a second run keeps the secrets
    assert devstack.read_env(tmp_path / "dev.env")["API_TOKEN"] == first["API_TOKEN"]
