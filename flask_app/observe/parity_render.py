"""Render a ParityReport as JSON-ready data, Markdown, or an HTML page with inline SVG plots.

Pure: no Flask, no database. The HTML page needs no JavaScript and loads nothing from the
network (the service may run where there is no internet); the plots are server-side SVG.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from html import escape
from typing import Any

from flask_app import paths as registry
from flask_app.observe.parity import LATENESS_EDGES_MS, ParityReport, PathStats, Percentiles

#: Rows of the per-prebooking table in the Markdown and HTML reports (JSON has them all).
TABLE_ROWS = 50


def _title(report: ParityReport) -> str:
    """Every path QStash is compared against, then QStash ("cron vs QStash" for two paths)."""
    return " vs ".join([*report.incumbents, "QStash"])


def _color(path: str) -> str:
    return registry.get(path).color


def to_data(report: ParityReport) -> dict[str, Any]:
    """The report as JSON-ready data (datetimes as ISO-8601, durations in seconds)."""
    data: dict[str, Any] = _jsonable(asdict(report))
    data["gates"] = [
        {"name": g.name, "passed": g.passed, "checks": _jsonable([asdict(c) for c in g.checks])}
        for g in report.gates
    ]
    data["histogram_edges_ms"] = list(LATENESS_EDGES_MS)
    return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, float):
        return round(value, 3)
    return value


# --------------------------------------------------------------------------------- Markdown


def to_markdown(report: ParityReport) -> str:
    """The report as a Markdown document (tables, verdict, thresholds)."""
    lines = [
        f"# Parity report: {_title(report)}",
        "",
        f"Window: {_at(report.since)} to {_at(report.generated_at)} · "
        f"prebookings due: {report.prebookings_due}",
        "",
        f"**Verdict:** {report.verdict}",
        "",
        "## Per path",
        "",
        *_md_table(["metric", *report.paths], _path_rows(report)),
        "",
        "## Aggregate",
        "",
        *_md_table(["metric", "value"], _aggregate_rows(report)),
        "",
        "## Gates (thresholds for the next rollout phase)",
        "",
    ]
    for gate in report.gates:
        lines += [f"### {gate.name}: {'PASS' if gate.passed else 'FAIL'}", ""]
        rows = [[c.name, c.value, c.threshold, "pass" if c.passed else "FAIL"] for c in gate.checks]
        lines += [*_md_table(["check", "value", "threshold", "result"], rows), ""]
    lines += [f"## Latest prebookings (up to {TABLE_ROWS})", ""]
    lines += _md_table(_prebooking_header(report), _prebooking_rows(report))
    return "\n".join(lines) + "\n"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows
    ]


def _path_rows(report: ParityReport) -> list[list[str]]:
    def row(label: str, pick: Any) -> list[str]:
        return [label, *(pick(stats) for stats in report.paths.values())]

    rows = [
        row("arrivals", lambda s: str(s.arrivals)),
        row("executions won", lambda s: str(s.executions)),
        row("claims released (transient)", lambda s: str(s.released)),
        row("arrivals that lost the race", lambda s: str(s.lost_race)),
        row("arrivals skipped (cancelled)", lambda s: str(s.skipped)),
        row("shadow observations", lambda s: str(s.observed)),
        row("duplicates suppressed", lambda s: str(s.duplicates_suppressed)),
        row("redeliveries", lambda s: str(s.redeliveries)),
        row("booking success rate", lambda s: _pct(s.success_rate)),
    ]
    for label, attr in (
        ("arrival lateness", "arrival_lateness"),
        ("fire lateness at AimHarder", "fire_lateness"),
        ("AimHarder latency", "booking_latency"),
    ):
        for q in ("p50", "p95", "p99", "max"):
            rows.append(row(f"{label} {q}", lambda s, a=attr, q=q: _ms(getattr(getattr(s, a), q))))
    return rows


def _aggregate_rows(report: ParityReport) -> list[list[str]]:
    lead = report.cron_beatable_lead_ms
    others = "/".join(report.incumbents) or "other paths"
    return [
        [f"executions by {' / '.join(report.executing)}", _executed(report)],
        ["QStash share of executions", _pct(report.qstash_win_share)],
        ["QStash deliveries that never came", str(len(report.missing_deliveries))],
        [f"… of which {others} had to execute", str(len(report.missing_covered_by_cron))],
        [f"{others} executions QStash would have beaten", str(len(report.cron_beatable))],
        [f"… QStash lead over {others} p50 / max", f"{_ms(lead.p50)} / {_ms(lead.max)}"],
        ["DLQ entries", str(len(report.dlq_entries))],
        ["delivery grace (for 'never came')", f"{report.thresholds.delivery_grace}"],
    ]


def _executed(report: ParityReport) -> str:
    return " / ".join(str(report.executed_by.get(path, 0)) for path in report.executing)


def _prebooking_header(report: ParityReport) -> list[str]:
    fixed = ["prebooking", "available at", "status", "executed by", "outcome", "first"]
    return [*fixed, *report.paths]


def _prebooking_rows(report: ParityReport) -> list[list[str]]:
    return [
        [
            r.id,
            _at(r.available_at),
            r.status,
            r.executed_by or "-",
            r.outcome or "-",
            r.first_path or "-",
            *(
                _ms(r.first_lateness_ms.get(p)) if p in r.first_lateness_ms else "-"
                for p in report.paths
            ),
        ]
        for r in report.prebookings[:TABLE_ROWS]
    ]


def _at(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 10000:
        return f"{value / 1000:,.1f} s"
    return f"{value:,.0f} ms"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


# --------------------------------------------------------------------------------- HTML + SVG

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,'DejaVu Sans',sans-serif;margin:0;color:#1a202c;
background:#f4f6f8}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 10px}
.sub{color:#4a5568;margin:0 0 16px}
.verdict{padding:14px 18px;border-radius:8px;font-weight:600;font-size:17px;margin:12px 0 20px}
.ready{background:#e6f6ec;border:1px solid #38a169;color:#22543d}
.notready{background:#fff5e6;border:1px solid #dd6b20;color:#7b341e}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px}
.card{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px #0002}
.card .v{font-size:26px;font-weight:700}.card .l{color:#4a5568;font-size:13px}
.panel{background:#fff;border-radius:8px;padding:14px;box-shadow:0 1px 2px #0002;margin-bottom:16px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
table{border-collapse:collapse;width:100%;font-size:13.5px;background:#fff}
th,td{padding:5px 8px;border-bottom:1px solid #e2e8f0;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{background:#edf2f7}
.pass{color:#276749;font-weight:600}.fail{color:#c53030;font-weight:600}
.key{display:inline-block;width:11px;height:11px;border-radius:2px;margin:0 4px 0 10px}
svg text{font-family:'DejaVu Sans',sans-serif}
.mono{font-family:'DejaVu Sans Mono',monospace;font-size:12px}
"""


def to_html(report: ParityReport) -> str:
    """A self-contained HTML page: verdict, key figures, SVG plots, tables."""
    ready = report.verdict.startswith("READY")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Parity: {escape(_title(report))}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>Parity: {escape(_title(report))}</h1>",
        f"<p class='sub'>{escape(_at(report.since))} → {escape(_at(report.generated_at))} · "
        f"{report.prebookings_due} prebookings due in the window</p>",
        f"<div class='verdict {'ready' if ready else 'notready'}' id='verdict'>"
        f"{escape(report.verdict)}</div>",
        _cards(report),
        "<h2>Arrival lateness against the window opening</h2>",
        "<p class='sub'>Each bar counts prebookings by how late a path's first arrival came "
        "against the opening of the booking window (bins up to the labelled edge). The green band "
        "is before the opening, where QStash deliveries belong: they arrive early and wait for "
        "the instant. Cron ticks once a minute, so its arrivals spread up to 60 s late.</p>",
        "<div class='grid2'>",
        *(_histogram_panel(stats) for stats in report.paths.values()),
        _percentile_panel(report),
        "</div>",
        "<h2>Executions over time</h2>",
        "<p class='sub'>Who executed the prebookings, per time bucket. In the parallel phase "
        "QStash should take nearly all of them; the other bars are prebookings "
        f"{escape('/'.join(report.incumbents) or 'another path')} had to do.</p>",
        f"<div class='panel'>{_wins_svg(report)}</div>",
        "<h2>Gates for the next rollout phase</h2>",
        *(_gate_table(gate) for gate in report.gates),
        "<h2>Per path</h2>",
        _html_table(["metric", *report.paths], _path_rows(report)),
        "<h2>Aggregate</h2>",
        _html_table(["metric", "value"], _aggregate_rows(report)),
        f"<h2>Latest prebookings (up to {TABLE_ROWS})</h2>",
        _html_table(_prebooking_header(report), _prebooking_rows(report)),
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _cards(report: ParityReport) -> str:
    figures = [
        (f"executions {' / '.join(report.executing)}", _executed(report)),
        ("QStash share", _pct(report.qstash_win_share)),
        ("QStash p99 arrival", _ms(_candidate(report).arrival_lateness.p99)),
        ("deliveries that never came", str(len(report.missing_deliveries))),
        (
            f"{'/'.join(report.incumbents) or 'other'} wins QStash would beat",
            str(len(report.cron_beatable)),
        ),
        ("DLQ entries", str(len(report.dlq_entries))),
    ]
    cards = "".join(
        f"<div class='card'><div class='v'>{escape(v)}</div>"
        f"<div class='l'>{escape(label)}</div></div>"
        for label, v in figures
    )
    return f"<div class='cards'>{cards}</div>"


def _candidate(report: ParityReport) -> PathStats:
    return report.paths[registry.QSTASH]


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f"<div class='panel'>{table}</div>"


def _gate_table(gate: Any) -> str:
    state = "<span class='pass'>PASS</span>" if gate.passed else "<span class='fail'>FAIL</span>"
    rows = "".join(
        f"<tr><td>{escape(c.name)}</td><td>{escape(c.value)}</td><td>{escape(c.threshold)}</td>"
        f"<td class='{'pass' if c.passed else 'fail'}'>{'pass' if c.passed else 'FAIL'}</td></tr>"
        for c in gate.checks
    )
    return (
        f"<div class='panel'><b>{escape(gate.name)}</b> {state}<table><thead><tr><th>check</th>"
        f"<th>value</th><th>threshold</th><th>result</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )


def _bin_labels() -> list[str]:
    edges = LATENESS_EDGES_MS
    labels = [f"≤{_short(edges[0])}"]
    labels += [f"{_short(hi)}" for hi in edges[1:]]
    return labels + [f">{_short(edges[-1])}"]


def _short(ms: float) -> str:
    if abs(ms) >= 1000:
        return f"{ms / 1000:g}s"
    return f"{ms:g}ms"


def _histogram_panel(stats: PathStats) -> str:
    color = _color(stats.path)
    summary = _summary(stats.arrival_lateness)
    return (
        f"<div class='panel'><b><span class='key' style='background:{color};margin-left:0'></span>"
        f"{escape(stats.path)}</b> "
        f"<span class='sub'>first arrival per prebooking · {summary}</span>"
        f"{_histogram_svg(stats.path, stats.histogram, color)}</div>"
    )


def _summary(p: Percentiles) -> str:
    if not p.count:
        return "no arrivals"
    return f"n={p.count} · p50 {_ms(p.p50)} · p99 {_ms(p.p99)} · max {_ms(p.max)}"


def _histogram_svg(path: str, counts: list[int], color: str) -> str:
    width, height, left, bottom, top = 540, 248, 40, 54, 30
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = max(counts) or 1
    bar_w = plot_w / len(counts)
    zero_index = LATENESS_EDGES_MS.index(0.0) + 1  # bins up to this one are "early"
    out = [
        f"<svg class='hist' data-path='{escape(path)}' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' "
        f"aria-label='lateness histogram {escape(path)}'>",
        f"<rect x='{left}' y='{top}' width='{zero_index * bar_w:.1f}' height='{plot_h}' "
        "fill='#f0fff4'/>",
        f"<text x='{left + 4}' y='{top - 18}' font-size='10' fill='#2f855a'>"
        "early (before opening)</text>",
    ]
    for i, count in enumerate(counts):
        h = plot_h * count / peak
        x = left + i * bar_w
        out.append(
            f"<rect class='bar' x='{x + 1:.1f}' y='{top + plot_h - h:.1f}' width='{bar_w - 2:.1f}' "
            f"height='{h:.1f}' fill='{color}'><title>{count}</title></rect>"
        )
        if count:
            out.append(
                f"<text x='{x + bar_w / 2:.1f}' y='{top + plot_h - h - 3:.1f}' font-size='9' "
                f"text-anchor='middle' fill='#2d3748'>{count}</text>"
            )
    for i, label in enumerate(_bin_labels()):
        x = left + (i + 0.5) * bar_w
        y = top + plot_h + 8
        out.append(
            f"<text x='{x:.1f}' y='{y}' font-size='9' text-anchor='end' fill='#4a5568' "
            f"transform='rotate(-50 {x:.1f} {y})'>{escape(label)}</text>"
        )
    out += [
        _axis(left, width - 8, top + plot_h),
        f"<text x='8' y='{top + 10}' font-size='10' fill='#4a5568'>{peak}</text>",
        f"<text x='8' y='{top + plot_h}' font-size='10' fill='#4a5568'>0</text>",
        "</svg>",
    ]
    return "".join(out)


def _axis(x1: float, x2: float, y: float) -> str:
    return f"<line x1='{x1}' y1='{y}' x2='{x2}' y2='{y}' stroke='#718096'/>"


def _percentile_panel(report: ParityReport) -> str:
    rows = []
    for path, s in report.paths.items():
        rows.append(
            [path, str(s.arrival_lateness.count), _ms(s.arrival_lateness.p50),
             _ms(s.arrival_lateness.p95), _ms(s.arrival_lateness.p99), _ms(s.fire_lateness.p99)]
        )  # fmt: skip
    table = _html_table(["path", "n", "p50", "p95", "p99", "fire p99"], rows)
    return table.replace("<div class='panel'>", "<div class='panel'><b>Lateness percentiles</b>", 1)


def _wins_svg(report: ParityReport) -> str:
    buckets = report.wins_over_time
    width, height, left, bottom, top = 1120, 260, 44, 46, 24
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max((sum(b.wins.values()) for b in buckets), default=0) or 1
    bar_w = plot_w / max(len(buckets), 1)
    out = [
        f"<svg id='wins' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
        "role='img' aria-label='executions per path over time'>",
        f"<text x='{left}' y='14' font-size='12' fill='#2d3748'>executions per "
        f"{escape(_width(report.bucket))}</text>",
        _legend(width - 90 * len(report.executing) - 20, 14, report.executing),
    ]
    step = max(1, len(buckets) // 8)
    for i, bucket in enumerate(buckets):
        x = left + i * bar_w
        base = float(top + plot_h)
        for path in reversed(report.executing):  # QStash at the bottom, as it should win
            n = bucket.wins.get(path, 0)
            if n:
                h = plot_h * n / peak
                base -= h
                out.append(
                    f"<rect class='win' data-path='{path}' x='{x + 0.5:.1f}' y='{base:.1f}' "
                    f"width='{max(bar_w - 1, 1):.1f}' height='{h:.1f}' fill='{_color(path)}'>"
                    f"<title>{path}: {n}</title></rect>"
                )
        if i % step == 0:
            out.append(
                f"<text x='{x:.1f}' y='{top + plot_h + 16}' font-size='10' fill='#4a5568'>"
                f"{escape(bucket.start.strftime('%m-%d %H:%M'))}</text>"
            )
    out += [
        _axis(left, width - 10, top + plot_h),
        f"<text x='6' y='{top + 10}' font-size='10' fill='#4a5568'>{peak}</text>",
        f"<text x='6' y='{top + plot_h}' font-size='10' fill='#4a5568'>0</text>",
        "</svg>",
    ]
    return "".join(out)


def _legend(x: int, y: int, names: list[str]) -> str:
    items = []
    for i, path in enumerate(names):
        items.append(
            f"<rect x='{x + i * 90}' y='{y - 10}' width='11' height='11' fill='{_color(path)}'/>"
            f"<text x='{x + i * 90 + 16}' y='{y}' font-size='12' fill='#2d3748'>{path}</text>"
        )
    return "".join(items)


def _width(width: timedelta) -> str:
    minutes = int(width.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 1440:
        return f"{minutes // 60} h"
    return f"{minutes // 1440} d"
