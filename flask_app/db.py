"""Engine and session lifecycle: one engine per app, one session per request or unit of work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

_EXT = "db"


class Database:
    """The app's engine and session factory, kept in app.extensions["db"]."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int = 10) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for work outside a request (CLI, threads); closed on exit."""
        with self.sessions() as session:
            yield session


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10) -> Engine:
    """An engine with the per-backend settings the service relies on.

    A server database gets a pool of `pool_size` connections plus `max_overflow` in bursts,
    per process: every gunicorn worker, CLI and cron process counts against the server's
    `max_connections` (100 by default on PostgreSQL).
    """
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs.update(pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow)
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout queues writers instead of failing.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def init_app(app: Flask) -> None:
    """Create the engine and close the request's session at teardown."""
    app.extensions[_EXT] = Database(
        app.config["DATABASE_URL"],
        pool_size=int(app.config["DB_POOL_SIZE"]),
        max_overflow=int(app.config["DB_MAX_OVERFLOW"]),
    )
    app.teardown_appcontext(_close_session)


def get_db(app: Flask | None = None) -> Database:
    """The Database of the given app, or of the current one."""
    db: Database = (app or current_app).extensions[_EXT]
    return db


def get_session() -> Session:
    """The session bound to the current app context, created on first use."""
    if "db_session" not in g:
        g.db_session = get_db().sessions()
    session: Session = g.db_session
    return session


def _close_session(_exc: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.close()
