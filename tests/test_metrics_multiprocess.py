"""One scrape of /metrics covers every gunicorn worker (prometheus-client multiprocess mode)."""

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from flask_app.dbschema import upgrade
from tests.reliability.stack import app_env, gunicorn

REQUESTS = 60


def test_one_scrape_counts_what_every_worker_answered(tmp_path, fernet_key):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    upgrade(url)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"a previous run's values")  # emptied at start
    env = app_env(
        DATABASE_URL=url,
        SESSION_ENCRYPTION_KEYS=fernet_key,
        QSTASH_ENABLED="true",
        LEGACY_CRON_ENABLED="false",
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
    )
    with gunicorn(env, tmp_path, workers=2) as server:
        for _ in range(REQUESTS):  # unsigned: 401, counted by whichever worker answered
            with httpx.Client() as fresh:  # a new connection each time: spread over the workers
                fresh.post(server.url + "/api/qstash/prebooking-execute", content=b"{}")
        text = httpx.get(server.url + "/metrics").text
        writers = {re.sub(r"\D", "", p.name) for p in metrics_dir.glob("counter_*.db")}
    answered = {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "qstash_webhook_responses_total"
    }
    assert answered == {"401": REQUESTS}
    assert len(writers) == 2  # both workers answered some, and one scrape summed them
