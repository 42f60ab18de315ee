"""The migrations build exactly the tables the models describe, on SQLite and PostgreSQL."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from flask_app.models import Base
from flask_app.shim.models import metadata as shim_metadata


def test_the_migrated_schema_matches_the_models(db_url):
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            diff = compare_metadata(context, [Base.metadata, shim_metadata])
    finally:
        engine.dispose()
    assert diff == []
