"""Wiring: settings from the environment, the broker, and a threaded werkzeug HTTP server."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from qstash_dev.api import ApiApp
from qstash_dev.engine import Broker
from qstash_dev.store import SqliteStore, Store

DEV_TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="
DEV_CURRENT_SIGNING_KEY = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
DEV_NEXT_SIGNING_KEY = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"


@dataclass(frozen=True)
class Settings:
    """How to run the server."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str = DEV_TOKEN
    current_signing_key: str = DEV_CURRENT_SIGNING_KEY
    next_signing_key: str = DEV_NEXT_SIGNING_KEY
    data_dir: str | None = None
    retry_delay_scale: float = 1.0
    quiet: bool = False
    clock_offset_s: float = 0.0  # signatures' clock ahead (+) or behind (-) the real one


def settings_from_env(environ: Mapping[str, str], **overrides: object) -> Settings:
    """Credentials and retry scale from the environment (official dev user 1 by default)."""
    base = Settings(
        token=environ.get("QSTASH_TOKEN") or DEV_TOKEN,
        current_signing_key=environ.get("QSTASH_CURRENT_SIGNING_KEY") or DEV_CURRENT_SIGNING_KEY,
        next_signing_key=environ.get("QSTASH_NEXT_SIGNING_KEY") or DEV_NEXT_SIGNING_KEY,
        retry_delay_scale=float(environ.get("QSTASH_DEV_RETRY_DELAY_SCALE") or 1.0),
    )
    values = {**base.__dict__, **{k: v for k, v in overrides.items() if v is not None}}
    return Settings(**values)


class _QuietHandler(WSGIRequestHandler):
    """Request handler that does not log every request."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Skip access logging."""


class DevServer:
    """The broker plus its HTTP front end; `start()` serves in a background thread."""

    def __init__(self, settings: Settings) -> None:
        """Build (but do not start) a server."""
        self.settings = settings
        store: Store = SqliteStore(Path(settings.data_dir)) if settings.data_dir else Store()
        self.broker = Broker(
            current_key=settings.current_signing_key,
            next_key=settings.next_signing_key,
            store=store,
            retry_delay_scale=settings.retry_delay_scale,
            clock_offset_s=settings.clock_offset_s,
        )
        handler = _QuietHandler if settings.quiet else WSGIRequestHandler
        self._http: BaseWSGIServer = make_server(
            settings.host,
            settings.port,
            ApiApp(self.broker, settings.token),
            threaded=True,
            request_handler=handler,
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._http.server_port)

    @property
    def url(self) -> str:
        """Base URL for `QSTASH_URL`."""
        return f"http://{self.settings.host}:{self.port}"

    def start(self) -> None:
        """Start delivering and serving in background threads."""
        self.broker.start()
        self._thread = threading.Thread(
            target=self._http.serve_forever, args=(0.05,), name="qstash-dev-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and delivering."""
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._http.server_close()
        self.broker.stop()

    def env_lines(self) -> list[str]:
        """`KEY=value` lines a user can paste into `.env`."""
        s = self.settings
        return [
            f"QSTASH_URL={self.url}",
            f"QSTASH_TOKEN={s.token}",
            f"QSTASH_CURRENT_SIGNING_KEY={self.broker.current_key}",
            f"QSTASH_NEXT_SIGNING_KEY={self.broker.next_key}",
        ]


def from_environment(**overrides: object) -> DevServer:
    """A server configured from `os.environ` plus explicit overrides."""
    return DevServer(settings_from_env(os.environ, **overrides))
