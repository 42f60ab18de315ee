"""`flask --app wsgi parity report [--since 24h] [--format md|json|html] [--output FILE]`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup

from flask_app.observe import comparison, parity, parity_render

parity_cli = AppGroup("parity", help="Compare the delivery paths (cron, QStash, ...).")
_RENDERERS = {"md": parity_render.to_markdown, "html": parity_render.to_html}


def init_app(app: Flask) -> None:
    """Register the `parity` command group."""
    app.cli.add_command(parity_cli)


def render(report: parity.ParityReport, fmt: str) -> str:
    """The report in one of md, json, html."""
    if fmt == "json":
        return json.dumps(parity_render.to_data(report), indent=2) + "\n"
    return _RENDERERS[fmt](report)


@parity_cli.command("report")
@click.option(
    "--since",
    "since_text",
    default="24h",
    show_default=True,
    help="Window start: a duration (30m, 24h, 7d) or an ISO-8601 instant with offset.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["md", "json", "html"]), default="md", show_default=True
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of standard output.",
)
def report_command(since_text: str, fmt: str, output: Path | None) -> None:
    """Per-path stats, the aggregate comparison and the rollout verdict."""
    try:
        report = comparison.current_report(since_text)
    except parity.SinceError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    text = render(report, fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {fmt} parity report to {output}: {report.verdict}")
