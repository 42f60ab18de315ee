"""Alembic environment: runs against the URL flask_app.dbschema puts in the config."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from flask_app.db import make_engine
from flask_app.models import Base
from flask_app.shim.models import metadata as shim_metadata

config = context.config
# The shim keeps its tables on its own metadata (it imports nothing of the app).
target_metadata = [Base.metadata, shim_metadata]


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    engine.pool = pool.NullPool(engine.pool._creator)  # type: ignore[attr-defined]
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection: object) -> None:
    # render_as_batch: SQLite can only ALTER through table copies.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
