"""Shared fixtures. Database-facing tests run on SQLite and on PostgreSQL (`db_url`)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text

from flask_app import close, create_app
from flask_app.dbschema import upgrade
from tests.fakes import FakeBookingClient

# Processes the suite starts must not pick up a developer's `make run` settings (instance/dev.env).
os.environ["DEV_ENV_FILE"] = ""

API_TOKEN = "test-api-token"
CRON_SECRET = "test-cron-secret"
SECRET_KEY = "test-secret-key-that-signs-the-admin-session-cookie"
TABLES = (
    "arrivals",
    "task_chord_parts",
    "task_chords",
    "task_results",
    "user_sessions",
    "qstash_outbox",
    "job_leases",
    "prebookings",
    "api_tokens",
    "fire_groups",
    "dispatch_processes",
)

# The admin connection; each test session creates its own database next to `test` and drops it.
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@pytest.fixture(scope="session")
def fernet_key() -> str:
    return _fernet_key()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once is much faster)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session; dropped at the end.

    Fails (never skips) when PostgreSQL cannot be reached: `make test` starts it.
    """
    name = f"prebook_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for the suite and is not reachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{name}"
    upgrade(url)
    yield url
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """An empty, migrated database: a SQLite file, then the session's PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "t.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def booking_client() -> FakeBookingClient:
    return FakeBookingClient()


@pytest.fixture
def app_overrides() -> dict[str, object]:
    """Override in a test module to change the app's config (e.g. {"CLOCK": clock})."""
    return {}


@pytest.fixture
def app_config(
    app_overrides: dict[str, object],
    db_url: str,
    booking_client: FakeBookingClient,
    fernet_key: str,
) -> dict[str, object]:
    """The test configuration; tests may tweak it before asking for `app`."""
    return {
        "TESTING": True,
        "DATABASE_URL": db_url,
        "API_TOKEN": API_TOKEN,
        "CRON_SECRET": CRON_SECRET,
        "SECRET_KEY": SECRET_KEY,
        "SESSION_ENCRYPTION_KEYS": fernet_key,
        "AIMHARDER_CLIENT": booking_client,
        # The gym's background jobs stay out of other tests' way (a runner pass in them would
        # expire prebookings whose user stored no session); their own tests turn them on.
        "PREFLIGHT_LEAD_S": 0,
        "GYM_CLOCK_PROBES": 0,
    } | app_overrides


@pytest.fixture
def app(app_config: dict[str, object]) -> Iterator[object]:
    application = create_app(app_config)
    yield application
    close(application)  # what the test left armed is released, what is in flight recorded


@pytest.fixture
def session(app):  # type: ignore[no-untyped-def]
    """A database session on the app's engine (modules may override it, e.g. to add rows)."""
    with app.extensions["db"].session() as s:
        yield s


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture
def runner(app):  # type: ignore[no-untyped-def]
    return app.test_cli_runner()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_TOKEN}"}
