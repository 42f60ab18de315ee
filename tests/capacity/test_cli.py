"""`flask capacity plan`: options and files in, a report out; bad input named field by field."""

import json

import pytest
from pydantic import ValidationError

from flask_app import create_app
from flask_app.capacity.inputs import PlanInput


@pytest.fixture
def cli(tmp_path):
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"})
    return app.test_cli_runner()


def plan(cli, *args):
    return cli.invoke(args=["capacity", "plan", "--runs", "1", *args])


def test_the_plan_answers_in_json_with_closed_form_and_simulation(cli):
    result = plan(
        cli, "--prebookings-per-day", "5000", "--largest-crowd", "300", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["input"]["load"]["largest_crowd"] == 300
    assert data["closed_form"]["admission"]["deliveries"] == 300
    assert len(data["simulation"]) == 1
    assert {row["quantity"] for row in data["comparison"]} >= {"lateness p99 (ms)"}
    assert data["unit_costs"]["admission_ms"]["source"]


def test_the_text_report_names_the_plan_and_the_disagreement(cli):
    result = plan(cli, "--prebookings-per-day", "5000", "--windows", "7:0.3,18:0.7")
    assert result.exit_code == 0, result.output
    assert "plan: pay-as-you-go" in result.output
    assert "Closed form vs simulation" in result.output


def test_a_yaml_file_is_read_and_options_override_it(cli, tmp_path):
    path = tmp_path / "load.yaml"
    path.write_text("load:\n  prebookings_per_day: 100\n  largest_crowd: 50\n")
    result = plan(cli, "--config", str(path), "--largest-crowd", "70", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["input"]["load"]["largest_crowd"] == 70


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--prebookings-per-day", "-5"], "load.prebookings_per_day"),
        (["--prebookings-per-day", "10", "--instances", "0"], "deployment.instances"),
        (["--prebookings-per-day", "10", "--workers", "0"], "deployment.workers_per_instance"),
        (["--prebookings-per-day", "10", "--jitter", "-1"], "qstash.jitter_s"),
        (["--prebookings-per-day", "10", "--largest-crowd", "5", "--crowd-classes", "9"], "load"),
        (["--largest-crowd", "5"], "load.prebookings_per_day"),  # required
    ],
)
def test_bad_options_are_refused_naming_the_field(cli, args, named):
    result = plan(cli, *args)
    assert result.exit_code == 2
    assert named in result.output


def test_unknown_keys_in_the_file_are_refused_naming_them(cli, tmp_path):
    path = tmp_path / "load.json"
    path.write_text(json.dumps({"load": {"prebookings_per_day": 10, "crowdd": 5}, "extra": 1}))
    result = plan(cli, "--config", str(path))
    assert result.exit_code == 2
    assert "load.crowdd" in result.output and "extra" in result.output


def test_a_file_that_is_not_a_mapping_is_refused(cli, tmp_path):
    path = tmp_path / "load.yaml"
    path.write_text("- 1\n- 2\n")
    result = plan(cli, "--config", str(path))
    assert result.exit_code == 2 and "mapping" in result.output


def test_malformed_windows_are_refused(cli):
    result = plan(cli, "--prebookings-per-day", "10", "--windows", "seven")
    assert result.exit_code == 2 and "HOUR:SHARE" in result.output


@pytest.mark.parametrize("windows", [[[24, 1.0]], [[7, 0.5], [7, 0.5]], [[7, -1.0]], [[7, 0.0]]])
def test_window_shares_must_name_distinct_hours_and_add_up(windows):
    with pytest.raises(ValidationError, match="windows"):
        PlanInput.model_validate({"load": {"prebookings_per_day": 10, "windows": windows}})


def test_a_missing_costs_file_given_explicitly_is_an_error(cli, tmp_path):
    result = plan(cli, "--prebookings-per-day", "10", "--costs", str(tmp_path / "none.json"))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_the_background_cores_must_leave_the_app_a_core():
    with pytest.raises(ValidationError, match="background_cores"):
        PlanInput.model_validate(
            {
                "load": {"prebookings_per_day": 10},
                "deployment": {"cores_per_instance": 2, "background_cores": 2},
            }
        )
