"""Recording arrivals through the real execution core, and the parity CLI, API, page and metrics."""

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from flask_app import close, create_app
from flask_app.aimharder.client import BookingOutcome
from flask_app.core.execution import Action, Attempt, get_executor
from flask_app.models import Arrival
from flask_app.observe import metrics
from flask_app.observe.comparison import on_attempt_finished
from tests.factories import make_prebooking, store_session
from tests.fake_gateway import FakeGateway
from tests.fakes import FakeClock, result

NOW = datetime(2026, 11, 30, 15, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock():
    return FakeClock(NOW - timedelta(seconds=2))


@pytest.fixture
def app_overrides(clock):
    return {"CLOCK": clock, "QSTASH_ENABLED": True, "QSTASH_GATEWAY": FakeGateway()}


@pytest.fixture
def due(app, session):
    store_session(app, session)
    return make_prebooking(session, available_at=NOW, qstash_message_id="msg_1")


def race(app, clock, prebooking_id):
    """QStash arrives 2 s early and books; cron's tick comes 30 s after the opening."""
    executor = get_executor(app)
    executor.attempt(prebooking_id, path="qstash", message_id="msg_1", retried=0)
    clock.current = NOW + timedelta(seconds=30)
    executor.attempt(prebooking_id, path="cron")
    clock.current = NOW + timedelta(minutes=1)


def arrivals(session):
    session.expire_all()
    return list(session.scalars(select(Arrival).order_by(Arrival.id)))


def samples(app):
    """Every sample of the app's /metrics as {(name, sorted labels): value}."""
    text = app.test_client().get("/metrics").get_data(as_text=True)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_every_arrival_of_both_paths_is_stored_with_its_timing(app, session, due, clock):
    race(app, clock, due.id)
    qstash, cron = arrivals(session)
    assert (qstash.path, qstash.won, qstash.action, qstash.outcome) == (
        "qstash",
        True,
        "executed",
        "booked",
    )
    assert qstash.lateness_ms == -2000.0 and qstash.fire_lateness_ms == 0.0
    assert qstash.fired_at == NOW and qstash.booking_latency_ms == 5.0
    assert (qstash.message_id, qstash.retried) == ("msg_1", 0)
    assert (cron.path, cron.won, cron.action, cron.outcome) == ("cron", False, "lost_claim", None)
    assert cron.lateness_ms == 30000.0 and cron.fired_at is None
    assert cron.detail == {"executed_by": "qstash"}


def test_released_and_shadow_arrivals_are_stored_too(app, session, due, clock, booking_client):
    booking_client.script = [result(BookingOutcome.TRANSIENT, sent=False)]
    executor = get_executor(app)
    executor.observe(due.id, path="shadow", message_id="msg_1")
    executor.attempt(due.id, path="qstash", retried=0)
    stored = arrivals(session)
    assert [(a.path, a.action, a.won) for a in stored] == [
        ("shadow", "shadow", False),
        ("qstash", "released", True),
    ]
    assert stored[1].outcome == "transient" and stored[1].detail["request_sent"] is False


def test_unknown_prebooking_is_logged_and_counted_but_not_stored(app, session, caplog):
    caplog.set_level(logging.INFO, logger="flask_app.observe.comparison")
    get_executor(app).attempt("no-such-id", path="qstash", message_id="msg_x")
    assert arrivals(session) == []
    assert (
        samples(app)[("prebooking_arrivals_total", (("action", "not_found"), ("path", "qstash")))]
        == 1
    )
    assert (
        "prebooking_id=no-such-id path=qstash lateness_ms=- won=false action=not_found"
        in caplog.text
    )


def test_one_structured_log_line_per_arrival(app, session, due, clock, caplog):
    caplog.set_level(logging.INFO, logger="flask_app.observe.comparison")
    race(app, clock, due.id)
    lines = [r.getMessage() for r in caplog.records if r.name == "flask_app.observe.comparison"]
    assert lines == [
        f"arrival prebooking_id={due.id} path=qstash lateness_ms=-2000.0 won=true "
        "action=executed outcome=booked fire_lateness_ms=0.0 booking_latency_ms=5.0 "
        "message_id=msg_1 retried=0",
        f"arrival prebooking_id={due.id} path=cron lateness_ms=30000.0 won=false "
        "action=lost_claim outcome=- fire_lateness_ms=- booking_latency_ms=- "
        "message_id=- retried=-",
    ]


def test_metrics_count_arrivals_executions_claims_and_lateness(app, due, clock):
    race(app, clock, due.id)
    found = samples(app)
    assert found[("prebooking_executions_total", (("outcome", "booked"), ("path", "qstash")))] == 1
    assert found[("prebooking_claims_lost_total", (("path", "cron"),))] == 1
    lateness = "prebooking_arrival_lateness_seconds"
    cron_late = (("path", "cron"), ("side", "late"))
    qstash_early = (("path", "qstash"), ("side", "early"))
    assert found[(f"{lateness}_count", cron_late)] == 1
    # magnitudes per side: both sums exist and only grow (see flask_app/observe/metrics.py)
    assert found[(f"{lateness}_sum", qstash_early)] == 2.0
    assert found[(f"{lateness}_sum", cron_late)] == 30.0
    assert found[(f"{lateness}_bucket", (("le", "1.0"), *qstash_early))] == 0
    assert found[(f"{lateness}_bucket", (("le", "2.0"), *qstash_early))] == 1
    assert found[(f"{lateness}_bucket", (("le", "30.0"), *cron_late))] == 1
    fire = (("path", "qstash"), ("side", "late"))
    assert found[("prebooking_fire_lateness_seconds_count", fire)] == 1


def test_webhook_responses_and_publish_errors_are_counted(app):
    with app.app_context():
        metrics.webhook_response(200)
        metrics.webhook_response(200)
        metrics.publish_error("unavailable")
    metrics.webhook_response(503, app=app)
    found = samples(app)
    assert found[("qstash_webhook_responses_total", (("status", "200"),))] == 2
    assert found[("qstash_webhook_responses_total", (("status", "503"),))] == 1
    assert found[("qstash_publish_errors_total", (("kind", "unavailable"),))] == 1


def test_each_app_has_its_own_metrics(app, app_config, due, clock):
    other = create_app(app_config)
    try:
        with other.app_context():
            metrics.webhook_response(200)
        assert ("qstash_webhook_responses_total", (("status", "200"),)) not in samples(app)
        assert samples(other)[("qstash_webhook_responses_total", (("status", "200"),))] == 1
    finally:
        close(other)


def test_metrics_are_public_and_in_prometheus_text_format(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(response.get_data(as_text=True))}
    assert {"prebooking_arrival_lateness_seconds", "qstash_webhook_responses"} <= names


def test_cli_report_in_json_counts_the_race(app, runner, due, clock):
    race(app, clock, due.id)
    out = runner.invoke(args=["parity", "report", "--since", "1h", "--format", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["paths"]["qstash"]["executions"] == 1
    assert data["paths"]["cron"]["lost_race"] == 1
    assert data["paths"]["cron"]["duplicates_suppressed"] == 0
    assert data["prebookings"][0]["first_path"] == "qstash"
    assert data["verdict"].startswith("NOT READY for shadow -> parallel")


def test_cli_report_in_markdown_by_default(app, runner, due, clock):
    race(app, clock, due.id)
    out = runner.invoke(args=["parity", "report"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("# Parity report: cron vs fallback vs QStash")
    assert "| executions won | 0 | 0 | 1 | 0 |" in out.output  # cron, fallback, qstash, shadow


def test_cli_report_writes_html_to_a_file(app, runner, due, clock, tmp_path):
    race(app, clock, due.id)
    target = tmp_path / "parity.html"
    out = runner.invoke(args=["parity", "report", "--format", "html", "--output", str(target)])
    assert out.exit_code == 0, out.output
    assert f"wrote html parity report to {target}: NOT READY" in out.output
    assert target.read_text().count("<svg class='hist'") == 4  # cron, fallback, qstash, shadow


@pytest.mark.parametrize("since", ["yesterday", "2026-11-30T10:00:00", "9999-01-01T00:00:00Z"])
def test_cli_rejects_a_bad_since_with_a_clear_error(runner, since):
    out = runner.invoke(args=["parity", "report", "--since", since])
    assert out.exit_code == 2
    assert "Invalid value for --since" in out.output


def test_api_parity_needs_the_api_token(client):
    response = client.get("/api/parity")
    assert response.status_code == 401 and "bearer" in response.get_json()["error"]


def test_api_parity_returns_the_report(app, client, auth, due, clock):
    race(app, clock, due.id)
    response = client.get("/api/parity?since=30m", headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["since"] == (NOW + timedelta(minutes=1) - timedelta(minutes=30)).isoformat()
    assert body["executed_by"] == {"cron": 0, "fallback": 0, "qstash": 1, "shadow": 0}


def test_api_parity_rejects_a_bad_since_with_422(client, auth):
    response = client.get("/api/parity?since=last-week", headers=auth)
    assert response.status_code == 422
    assert "since must be a duration" in response.get_json()["error"]


def test_admin_page_needs_the_api_token(client):
    assert client.get("/admin/parity").headers["Location"].startswith("/admin/login")
    wrong = {"Authorization": "Bearer nope"}
    assert client.get("/admin/parity", headers=wrong).status_code == 401


def test_admin_page_is_html_with_plots(app, client, auth, due, clock):
    race(app, clock, due.id)
    response = client.get("/admin/parity", headers=auth)
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert page.count("<svg class='hist'") == 4 and "<svg id='wins'" in page
    assert due.id in page


def test_admin_page_is_disabled_while_no_api_token_is_set(app_config):
    unset = create_app(app_config | {"API_TOKEN": None})
    try:
        assert unset.test_client().get("/admin/parity").status_code == 503
    finally:
        close(unset)


def test_report_counts_a_duplicate_delivery_as_suppressed(app, client, auth, due, clock):
    executor = get_executor(app)
    executor.attempt(due.id, path="qstash", message_id="msg_1", retried=0)
    executor.attempt(due.id, path="qstash", message_id="msg_1", retried=0)
    clock.current = NOW + timedelta(minutes=1)
    qstash = client.get("/api/parity?since=1h", headers=auth).get_json()["paths"]["qstash"]
    assert (qstash["executions"], qstash["duplicates_suppressed"], qstash["redeliveries"]) == (
        1,
        1,
        1,
    )
    assert qstash["lost_race"] == 0


def test_shadow_delivery_before_crons_execution_is_beatable(app, client, auth, due, clock):
    executor = get_executor(app)
    executor.observe(due.id, path="shadow", message_id="msg_1")
    clock.current = NOW + timedelta(seconds=30)
    executor.attempt(due.id, path="cron")
    clock.current = NOW + timedelta(minutes=15)
    body = client.get("/api/parity?since=1h", headers=auth).get_json()
    assert body["cron_beatable"] == [due.id]
    assert body["cron_beatable_lead_ms"]["max"] == 32000.0
    assert body["missing_deliveries"] == []
    assert body["paths"]["shadow"]["observed"] == 1
    assert body["paths"]["shadow"]["arrival_lateness"]["p50"] == -2000.0


def test_published_prebooking_cron_executed_without_any_delivery_is_missing(
    app, client, auth, due, clock
):
    clock.current = NOW + timedelta(seconds=30)
    get_executor(app).attempt(due.id, path="cron")
    clock.current = NOW + timedelta(minutes=9)
    assert client.get("/api/parity?since=1h", headers=auth).get_json()["missing_deliveries"] == []
    clock.current = NOW + timedelta(minutes=11)
    body = client.get("/api/parity?since=1h", headers=auth).get_json()
    assert body["missing_deliveries"] == [due.id] and body["missing_covered_by_cron"] == [due.id]


def test_an_arrival_that_cannot_be_stored_is_logged_and_does_not_raise(app, session, caplog):
    ghost = Attempt("gone", "qstash", NOW, Action.LOST_CLAIM, available_at=NOW)
    with app.app_context():
        on_attempt_finished("qstash", attempt=ghost)  # the foreign key refuses the row
    assert arrivals(session) == []
    assert "arrival of gone could not be stored" in caplog.text
    assert samples(app)[("prebooking_claims_lost_total", (("path", "qstash"),))] == 1
