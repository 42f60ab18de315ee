"""parity.compare() and its renderers, on synthetic arrivals (pure: no app, no database)."""

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from flask_app.observe.parity import (
    LATENESS_EDGES_MS,
    ArrivalRecord,
    PrebookingInfo,
    SinceError,
    Thresholds,
    compare,
    histogram,
    parse_since,
    percentiles,
)
from flask_app.observe.parity_render import to_data, to_html, to_markdown

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(hours=24)
OPEN = NOW - timedelta(hours=2)


def info(pid, *, status="completed", executed_by="qstash", msg="msg", error=None, at=OPEN):
    return PrebookingInfo(pid, at, status, executed_by, msg, error)


def arrival(pid, path, late_ms, action="lost_claim", *, outcome=None, at=OPEN, **kw):
    won = action in ("executed", "confirmed", "failed", "released")
    fired = kw.pop("fire_ms", 0.0 if action == "executed" else None)
    return ArrivalRecord(
        prebooking_id=pid,
        path=path,
        arrived_at=at + timedelta(milliseconds=late_ms),
        available_at=at,
        lateness_ms=late_ms,
        won=kw.pop("won", won),
        action=action,
        outcome=outcome or ("booked" if action == "executed" else None),
        fired_at=None if fired is None else at + timedelta(milliseconds=fired),
        fire_lateness_ms=fired,
        booking_latency_ms=120.0 if action == "executed" else None,
        **kw,
    )


def parallel_run(n, *, qstash_late_ms=-1500.0):
    """n prebookings where QStash arrives first and executes, and cron arrives 20 s late."""
    infos, arrivals = [], []
    for i in range(n):
        at = OPEN + timedelta(minutes=i)
        infos.append(info(f"p{i}", at=at))
        arrivals.append(arrival(f"p{i}", "qstash", qstash_late_ms, "executed", at=at))
        arrivals.append(arrival(f"p{i}", "cron", 20000.0, at=at))
    return arrivals, infos


def test_percentiles_interpolate_between_order_statistics():
    p = percentiles(float(v) for v in range(1, 101))
    assert (p.count, p.p50, p.max) == (100, 50.5, 100.0)
    assert p.p95 == pytest.approx(95.05) and p.p99 == pytest.approx(99.01)


def test_percentiles_of_nothing_are_none():
    assert percentiles([]).p99 is None and percentiles([]).count == 0


def test_histogram_bins_are_closed_on_the_right_with_open_ends():
    counts = histogram([-9000, -5000, 0, 0.1, 120000, 500000])
    zero = LATENESS_EDGES_MS.index(0.0)
    assert counts[0] == 2 and counts[zero] == 1 and counts[zero + 1] == 1
    assert counts[-2] == 1 and counts[-1] == 1 and sum(counts) == 6


def test_qstash_executing_first_is_counted_per_path():
    arrivals, infos = parallel_run(4)
    report = compare(arrivals, infos, NOW, SINCE)
    qstash, cron = report.paths["qstash"], report.paths["cron"]
    assert (qstash.executions, qstash.lost_race, qstash.success_rate) == (4, 0, 1.0)
    assert (cron.executions, cron.lost_race, cron.success_rate) == (0, 4, None)
    assert report.executed_by == {"cron": 0, "qstash": 4, "shadow": 0}
    assert report.qstash_win_share == 1.0
    assert qstash.arrival_lateness.p50 == -1500.0 and cron.arrival_lateness.max == 20000.0
    assert qstash.fire_lateness.max == 0.0 and qstash.booking_latency.p50 == 120.0
    assert [r.first_path for r in report.prebookings] == ["qstash"] * 4


def test_success_rate_counts_final_outcomes_of_won_executions():
    arrivals = [
        arrival("a", "qstash", -1000, "executed", outcome="booked"),
        arrival("b", "qstash", -1000, "executed", outcome="full"),
        arrival("c", "qstash", -1000, "failed", outcome=None),
        arrival("d", "qstash", -1000, "released", outcome="transient"),
    ]
    stats = compare(arrivals, [], NOW, SINCE).paths["qstash"]
    assert (stats.executions, stats.released, stats.successes) == (3, 1, 1)
    assert stats.success_rate == pytest.approx(1 / 3)


def test_duplicates_are_a_paths_later_arrivals_that_did_nothing():
    arrivals = [
        arrival("a", "qstash", -1500, "executed"),
        arrival("a", "qstash", -1400, "lost_claim", message_id="m1", retried=0),
        arrival("a", "cron", 30000, "lost_claim"),
        arrival("a", "cron", 90000, "lost_claim"),
        arrival("b", "cron", 100, "skipped"),  # its first arrival: not a duplicate
    ]
    report = compare(arrivals, [], NOW, SINCE)
    assert report.paths["qstash"].duplicates_suppressed == 1
    assert report.paths["cron"].duplicates_suppressed == 1
    assert report.paths["cron"].skipped == 1


def test_lost_race_is_a_paths_first_arrival_losing_to_the_other_path():
    arrivals = [
        arrival("a", "qstash", -1500, "executed"),
        arrival("a", "qstash", -1400, "lost_claim"),  # its own duplicate, not a lost race
        arrival("a", "cron", 30000, "lost_claim"),
        arrival("b", "cron", 20000, "lost_claim"),  # winner known only from the row
    ]
    infos = [info("a"), info("b", executed_by="qstash")]
    report = compare(arrivals, infos, NOW, SINCE)
    assert report.paths["qstash"].lost_race == 0
    assert report.paths["cron"].lost_race == 2


def test_redeliveries_are_retries_or_a_repeated_message_id():
    arrivals = [
        arrival("a", "qstash", -1500, "released", message_id="m1", retried=0),
        arrival("a", "qstash", 8500, "executed", message_id="m1", retried=1),
        arrival("b", "qstash", -1500, "executed", message_id="m2", retried=0),
        arrival("b", "qstash", -1200, "lost_claim", message_id="m2", retried=0),
    ]
    assert compare(arrivals, [], NOW, SINCE).paths["qstash"].redeliveries == 2


def test_lateness_uses_each_paths_first_arrival_per_prebooking():
    arrivals = [
        arrival("a", "qstash", -1500, "released", retried=0),
        arrival("a", "qstash", 8500, "executed", retried=1, fire_ms=8500.0),
    ]
    stats = compare(arrivals, [], NOW, SINCE).paths["qstash"]
    assert stats.arrival_lateness.count == 1 and stats.arrival_lateness.max == -1500
    assert stats.fire_lateness.max == 8500.0


def test_delivery_that_never_came_is_counted_after_the_grace_only():
    old, fresh = OPEN, NOW - timedelta(minutes=5)
    infos = [
        info("missing", executed_by="cron", at=old),
        info("recent", executed_by="cron", at=fresh),
        info("unpublished", executed_by="cron", msg=None, at=old),
        info("cancelled", status="cancelled", executed_by=None, at=old),
        info("delivered", executed_by="cron", at=old),
        info("shadowed", executed_by="cron", at=old),
    ]
    arrivals = [
        arrival("missing", "cron", 20000, "executed"),
        arrival("delivered", "cron", 500, "executed"),
        arrival("delivered", "qstash", 900, "lost_claim"),
        arrival("shadowed", "shadow", -1500, "shadow"),
        arrival("shadowed", "cron", 500, "executed"),
    ]
    report = compare(arrivals, infos, NOW, SINCE)
    assert report.missing_deliveries == ["missing"]
    assert report.missing_covered_by_cron == ["missing"]


def test_cron_execution_is_beatable_when_a_delivery_arrived_before_it():
    arrivals = [
        arrival("s", "shadow", -1500, "shadow"),
        arrival("s", "cron", 30000, "executed"),
        arrival("late", "cron", 2000, "executed"),
        arrival("late", "qstash", 2500, "lost_claim"),
    ]
    report = compare(arrivals, [], NOW, SINCE)
    assert report.cron_beatable == ["s"]
    assert report.cron_beatable_lead_ms.max == 31500.0


def test_dlq_entries_are_failed_prebookings_whose_reason_names_the_dlq():
    infos = [
        info("d1", status="failed", executed_by=None, error="QStash DLQ: delivery failed 3 times"),
        info(
            "d2", status="failed", executed_by=None, error="message died in the dead-letter queue"
        ),
        info("full", status="failed", error="class is full"),
        info("ok", error=None),
    ]
    assert compare([], infos, NOW, SINCE).dlq_entries == ["d1", "d2"]


def test_arrivals_and_prebookings_outside_the_window_are_ignored():
    before = SINCE - timedelta(hours=1)
    arrivals = [arrival("old", "qstash", -1500, "executed", at=before)]
    report = compare(arrivals, [info("old", at=before)], NOW, SINCE)
    assert report.paths["qstash"].arrivals == 0 and report.prebookings_due == 0


def test_healthy_shadow_phase_is_ready_for_parallel_but_not_for_qstash_only():
    arrivals = [arrival(f"p{i}", "shadow", -1500 + i, "shadow") for i in range(5)]
    arrivals += [arrival(f"p{i}", "cron", 20000, "executed") for i in range(5)]
    infos = [info(f"p{i}", executed_by="cron") for i in range(5)]
    report = compare(arrivals, infos, NOW, SINCE, Thresholds(min_shadow_deliveries=5))
    shadow_gate, qstash_gate = report.gates
    assert shadow_gate.passed and not qstash_gate.passed
    assert report.verdict.startswith("NOT READY for parallel -> qstash-only: safe to go parallel")
    assert "QStash share of executions" in report.verdict


def test_parallel_phase_with_qstash_winning_is_ready_for_qstash_only():
    arrivals, infos = parallel_run(10)
    limits = Thresholds(min_shadow_deliveries=10, min_parallel_executions=10)
    report = compare(arrivals, infos, NOW, SINCE, limits)
    assert all(gate.passed for gate in report.gates)
    assert report.verdict == "READY: every gate passes; safe to go qstash-only"


def test_late_deliveries_fail_the_shadow_gate_and_name_the_check():
    arrivals, infos = parallel_run(10, qstash_late_ms=800.0)
    limits = Thresholds(min_shadow_deliveries=10, min_parallel_executions=10)
    report = compare(arrivals, infos, NOW, SINCE, limits)
    assert report.verdict == (
        "NOT READY for shadow -> parallel: failing: delivery p99 lateness vs opening"
    )


def test_qstash_success_rate_may_not_trail_crons_once_cron_has_enough_samples():
    arrivals, infos = parallel_run(10)
    arrivals = [a for a in arrivals if a.path == "qstash"][:5]
    arrivals += [arrival(f"c{i}", "cron", 500, "executed") for i in range(5)]
    arrivals += [arrival(f"f{i}", "qstash", -1500, "executed", outcome="full") for i in range(5)]
    limits = Thresholds(min_cron_executions_for_rate=5)
    check = next(c for c in compare(arrivals, [], NOW, SINCE, limits).gates[1].checks
                 if c.name == "QStash success rate vs cron")  # fmt: skip
    assert not check.passed and check.value.startswith("50.0% vs 100.0%")
    lenient = Thresholds(min_cron_executions_for_rate=6)
    check = compare(arrivals, [], NOW, SINCE, lenient).gates[1].checks[2]
    assert check.passed


def test_wins_over_time_counts_executions_per_bucket():
    arrivals, infos = parallel_run(3)
    arrivals.append(arrival("c", "cron", 500, "executed", at=OPEN + timedelta(hours=1)))
    report = compare(arrivals, infos, NOW, SINCE)
    assert report.bucket == timedelta(minutes=15)
    totals = {"cron": 0, "qstash": 0}
    for bucket in report.wins_over_time:
        for path, n in bucket.wins.items():
            totals[path] += n
    assert totals == {"cron": 1, "qstash": 3}
    assert report.wins_over_time[0].start <= SINCE < report.wins_over_time[1].start


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("1.5h", NOW - timedelta(minutes=90)),
        ("2026-11-29T08:00:00+01:00", datetime(2026, 11, 29, 7, 0, tzinfo=UTC)),
        ("2026-11-29T08:00:00Z", datetime(2026, 11, 29, 8, 0, tzinfo=UTC)),
    ],
)
def test_since_accepts_durations_and_instants_with_offset(text, expected):
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "duration like 30m"),
        ("24", "duration like 30m"),
        ("2026-11-29T08:00:00", "needs a UTC offset"),
        ("2027-01-01T00:00:00+00:00", "in the future"),
    ],
)
def test_since_rejects_anything_else_with_a_clear_message(text, message):
    with pytest.raises(SinceError, match=message):
        parse_since(text, NOW)


def test_markdown_shows_verdict_thresholds_and_per_path_table():
    arrivals, infos = parallel_run(3)
    text = to_markdown(compare(arrivals, infos, NOW, SINCE))
    assert "**Verdict:** NOT READY for shadow -> parallel" in text
    assert "| QStash deliveries seen | 3 | >= 50 | FAIL |" in text
    assert "| executions won | 0 | 3 | 0 |" in text
    assert "| arrival lateness p99 | 20.0 s | -1,500 ms | n/a |" in text


def test_json_report_is_serialisable_and_keeps_every_field():
    arrivals, infos = parallel_run(2)
    data = json.loads(json.dumps(to_data(compare(arrivals, infos, NOW, SINCE))))
    assert data["paths"]["qstash"]["executions"] == 2
    assert data["paths"]["qstash"]["arrival_lateness"]["p50"] == -1500.0
    assert data["thresholds"]["delivery_grace"] == 600.0
    assert data["gates"][0]["name"] == "shadow -> parallel" and data["gates"][0]["passed"] is False
    assert data["since"] == SINCE.isoformat() and len(data["prebookings"]) == 2
    assert len(data["paths"]["cron"]["histogram"]) == len(data["histogram_edges_ms"]) + 1


def test_html_page_has_one_histogram_per_path_and_the_wins_chart():
    arrivals, infos = parallel_run(3)
    page = to_html(compare(arrivals, infos, NOW, SINCE))
    assert page.count("<svg class='hist'") == 3 and "<svg id='wins'" in page
    wins = re.findall(r"<title>(cron|qstash): (\d+)</title>", page)
    assert sum(int(n) for path, n in wins if path == "qstash") == 3
    assert "<script" not in page and "http" not in page.split("<main>")[0]


@pytest.mark.parametrize("text", ["400d", "9999999999w", "1970-01-01T00:00:00+00:00"])
def test_windows_longer_than_a_year_are_refused(text):
    with pytest.raises(SinceError, match="more than 366 days"):
        parse_since(text, datetime(2026, 11, 30, tzinfo=UTC))


def test_a_year_long_window_keeps_the_chart_small():
    now = datetime(2026, 11, 30, tzinfo=UTC)
    report = compare([], [], now, now - timedelta(days=366))
    assert len(report.wins_over_time) <= 101


@pytest.fixture
def fallback_path():
    """A third executing path (the dispatcher's sweep registers one like it)."""
    from flask_app import paths

    path = paths.register(paths.DeliveryPath("fallback", "the app's own sweep", color="#38a169"))
    yield path
    paths._registry.pop("fallback")


def test_every_registered_path_is_compared_and_gated_not_just_cron_and_qstash(fallback_path):
    arrivals, infos = parallel_run(8)
    arrivals += [arrival(f"f{i}", "fallback", 300, "executed") for i in range(2)]
    infos += [info(f"f{i}", executed_by="fallback") for i in range(2)]
    report = compare(arrivals, infos, NOW, SINCE, Thresholds(min_cron_executions_for_rate=1))
    assert list(report.paths) == ["cron", "fallback", "qstash", "shadow"]
    assert report.executing == ["cron", "fallback", "qstash"]
    assert report.executed_by == {"cron": 0, "fallback": 2, "qstash": 8, "shadow": 0}
    assert report.qstash_win_share == 0.8
    success = report.gates[1].checks[2]
    assert success.name == "QStash success rate vs cron, fallback"
    assert success.value == "100.0% vs n/a (cron n=0), 100.0% (fallback n=2)"
    page = to_html(report)
    assert page.count("<svg class='hist'") == 4 and "fill='#38a169'" in page
    assert "# Parity report: cron vs fallback vs QStash" in to_markdown(report)
