"""`flask --app wsgi capacity plan`: what to run for a load, and what it costs."""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup
from pydantic import ValidationError

from flask_app.capacity import costs, model, report, simulate
from flask_app.capacity.inputs import PlanInput

# PyYAML ships no type hints and its stubs are not a dependency: typed as Any on purpose.
yaml: Any = importlib.import_module("yaml")
ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_COSTS = ROOT / "bench" / "results" / "costs.json"

capacity_cli = AppGroup("capacity", help="Capacity planning: instances, connections, QStash.")

# option name -> (section, field) in PlanInput
_OPTIONS: dict[str, tuple[str, str]] = {
    "prebookings_per_day": ("load", "prebookings_per_day"),
    "windows": ("load", "windows"),
    "largest_crowd": ("load", "largest_crowd"),
    "crowd_classes": ("load", "crowd_classes"),
    "instances": ("deployment", "instances"),
    "cores": ("deployment", "cores_per_instance"),
    "workers": ("deployment", "workers_per_instance"),
    "max_connections": ("deployment", "max_connections"),
    "jitter": ("qstash", "jitter_s"),
    "whole_seconds": ("qstash", "whole_seconds"),
    "lead": ("qstash", "lead_s"),
    "crowd_lead_ms": ("qstash", "crowd_lead_ms"),
    "max_lead": ("qstash", "max_lead_s"),
    "billing": ("qstash", "billing"),
}


def parse_windows(text: str) -> str | list[tuple[int, float]]:
    """'uniform' or 'HOUR:SHARE,HOUR:SHARE' (e.g. '7:0.3,18:0.7').

    Raises:
        click.BadParameter: on anything else.
    """
    if text.strip() == "uniform":
        return "uniform"
    try:
        pairs = [part.split(":") for part in text.split(",") if part.strip()]
        return [(int(hour), float(share)) for hour, share in pairs]
    except ValueError:
        raise click.BadParameter("use 'uniform' or HOUR:SHARE pairs like 7:0.3,18:0.7") from None


def read_config(path: Path) -> dict[str, Any]:
    """A YAML or JSON load description (JSON is YAML)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise click.BadParameter(f"{path}: not YAML/JSON: {exc}", param_hint="--config") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: expected a mapping at top level", param_hint="--config")
    return data


def build_input(config: Mapping[str, Any], options: Mapping[str, Any]) -> PlanInput:
    """The validated input: the file's values, then every option given on top.

    Raises:
        click.UsageError: naming each bad field.
    """
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for name, value in options.items():
        if value is None:
            continue
        section, field = _OPTIONS[name]
        if not isinstance(merged.setdefault(section, {}), dict):
            raise click.UsageError(f"{section}: expected a mapping")
        merged[section][field] = value
    try:
        return PlanInput.model_validate(merged)
    except ValidationError as exc:
        raise click.UsageError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """One line per problem, each naming its field (load.largest_crowd: ...)."""
    lines = ["invalid capacity input:"]
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


def load_costs(path: Path | None) -> costs.UnitCosts:
    """Unit costs from costs.json (the default file if it exists, else the fallbacks)."""
    target = path or DEFAULT_COSTS
    if not target.exists():
        if path is not None:
            raise click.BadParameter(f"{path} does not exist", param_hint="--costs")
        return costs.from_costs_json(None)
    try:
        return costs.from_costs_json(json.loads(target.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{target}: not JSON: {exc}", param_hint="--costs") from exc


@capacity_cli.command("plan")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML or JSON load description (load, deployment, qstash, storage, prices, costs).",
)
@click.option(
    "--costs",
    "costs_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Measured unit costs [bench/results/costs.json].",
)
@click.option("--prebookings-per-day", type=float)
@click.option("--windows", type=str, help="'uniform' or HOUR:SHARE pairs, e.g. 7:0.3,18:0.7.")
@click.option("--largest-crowd", type=int, help="Prebookings opening at one instant.")
@click.option("--crowd-classes", type=int, help="Classes in that crowd.")
@click.option("--instances", type=int)
@click.option("--cores", type=float, help="Cores per instance.")
@click.option("--workers", type=int, help="Gunicorn workers per instance.")
@click.option("--max-connections", type=int, help="PostgreSQL max_connections.")
@click.option("--jitter", type=float, help="QStash delivery jitter, s (uniform 0..J).")
@click.option("--whole-seconds/--no-whole-seconds", default=None, help="not_before in whole s.")
@click.option("--lead", type=float, help="QSTASH_LEAD_SECONDS.")
@click.option("--crowd-lead-ms", type=float, help="QSTASH_CROWD_LEAD_MS.")
@click.option("--max-lead", type=float, help="QSTASH_MAX_LEAD_SECONDS.")
@click.option("--billing", type=click.Choice(["attempts", "messages"]))
@click.option(
    "--runs",
    type=click.IntRange(0, 100),
    default=5,
    show_default=True,
    help="Simulated crowds (0: none).",
)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def plan_command(
    config_path: Path | None,
    costs_path: Path | None,
    windows: str | None,
    runs: int,
    seed: int,
    fmt: str,
    **options: Any,
) -> None:
    """Answer, for a load: admitted in time? p99 lateness? connections? QStash plan and cost?"""
    config = read_config(config_path) if config_path else {}
    if windows is not None:
        options["windows"] = parse_windows(windows)
    inputs = build_input(config, options)
    unit = costs.with_overrides(load_costs(costs_path), inputs.costs)
    answer = model.plan(inputs, unit)
    sims = simulate.simulate(inputs, unit, runs=runs, seed=seed) if runs else []
    if fmt == "json":
        click.echo(json.dumps(report.to_json(inputs, unit, answer, sims), indent=2))
    else:
        click.echo(report.to_text(inputs, unit, answer, sims), nl=False)


def init_app(app: Flask) -> None:
    """Register the `capacity` command group."""
    app.cli.add_command(capacity_cli)
