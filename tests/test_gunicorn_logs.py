"""Under gunicorn (the repo's gunicorn.conf.py), its lines and the app's share one JSON format."""

import json
import shutil

import httpx
import pytest

from tests.conftest import API_TOKEN
from tests.reliability.stack import app_env, gunicorn

pytestmark = pytest.mark.slow


def test_gunicorn_and_the_app_write_json_lines_with_the_request_id(tmp_path, sqlite_template):
    db = tmp_path / "g.db"
    shutil.copy(sqlite_template, db)
    env = app_env(
        DATABASE_URL=f"sqlite:///{db}",
        API_TOKEN=API_TOKEN,
        GUNICORN_ACCESSLOG="-",
        DEV_ENV_FILE="",
    )
    with gunicorn(env, tmp_path, workers=1) as server:
        answer = httpx.get(
            server.url + "/api/prebookings",
            headers={"Authorization": f"Bearer {API_TOKEN}", "X-Request-ID": "gun-1"},
        )
        assert answer.headers["X-Request-ID"] == "gun-1"
    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is JSON, gunicorn's included
    loggers = {line["logger"] for line in parsed}
    assert {"gunicorn.error", "gunicorn.access", "flask_app.observe.logs"} <= loggers
    access = [x for x in parsed if x["logger"] == "gunicorn.access"]
    app_line = [x for x in parsed if x["logger"] == "flask_app.observe.logs"]
    assert access[-1]["request_id"] == "gun-1" and access[-1]["status"] == 200
    assert access[-1]["path"] == "/api/prebookings" and access[-1]["method"] == "GET"
    assert app_line[-1]["request_id"] == "gun-1" and app_line[-1]["path"] == "/api/prebookings"
    assert API_TOKEN not in server.log_path.read_text()
