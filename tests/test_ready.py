"""/api/health touches the database; /api/ready checks the database, migrations at head and
whatever the app registers (observe/readiness.py)."""

import pytest

from flask_app import close, create_app
from flask_app.dbschema import head_revisions
from flask_app.observe import readiness


def app_with(app_config, **changes):
    return create_app(app_config | changes)


@pytest.fixture
def down(app_config):
    # Nothing listens on port 1: every connection is refused at once.
    app = app_with(app_config, DATABASE_URL="postgresql+psycopg://u@127.0.0.1:1/none")
    yield app.test_client()
    close(app)


def test_health_says_the_database_answers(client):
    resp = client.get("/api/health")
    assert resp.status_code == 200 and resp.json["database"] == "answers"
    assert resp.json["status"] == "ok"


def test_health_is_503_naming_the_database_when_it_is_down(down):
    resp = down.get("/api/health")
    assert resp.status_code == 503 and resp.json["status"] == "degraded"
    assert resp.json["error"] == "database unreachable: OperationalError"


def test_ready_when_the_database_answers_at_the_head_revision(client):
    resp = client.get("/api/ready")
    assert resp.status_code == 200 and resp.json["status"] == "ready"
    assert resp.json["checks"]["database"] == {"ok": True, "detail": "answers"}
    head = ", ".join(sorted(head_revisions()))
    assert resp.json["checks"]["migrations"] == {"ok": True, "detail": f"at head {head}"}


def test_not_ready_before_migrations_ran(app_config, tmp_path):
    app = app_with(app_config, DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    resp = app.test_client().get("/api/ready")
    assert resp.status_code == 503 and resp.json["error"] == "not ready: migrations"
    assert resp.json["checks"]["migrations"]["detail"].startswith("at none, head is ")
    close(app)


def test_not_ready_when_the_database_is_down(down):
    resp = down.get("/api/ready")
    assert resp.status_code == 503
    assert resp.json["error"] == "not ready: database, migrations"


def test_parts_of_the_app_add_their_own_checks_and_a_broken_one_fails_alone(app, client):
    readiness.register(app, lambda _app: readiness.Check("schedules", False, "2 missing"))

    def broken(_app):
        raise RuntimeError("boom")

    readiness.register(app, broken)
    resp = client.get("/api/ready")
    assert resp.status_code == 503 and resp.json["error"] == "not ready: schedules, broken"
    assert resp.json["checks"]["broken"] == {"ok": False, "detail": "RuntimeError"}
    assert resp.json["checks"]["database"]["ok"] is True
