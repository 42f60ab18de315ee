"""Capacity planning: a closed-form model and a discrete-event simulation on measured costs.

Pure modules (inputs, costs, plans, model, simulate, report) take inputs and return numbers;
cli.py is the `flask --app wsgi capacity plan` edge. docs/capacity.md explains the model.
"""

from flask_app.capacity.cli import init_app

__all__ = ["init_app"]
