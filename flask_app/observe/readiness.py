"""Readiness: can this instance take traffic? The database answers, migrations are at head,
and whatever else a part of the app registers (e.g. the QStash schedules exist).

A check is a function of the app returning a Check; `register(app, check)` appends one. Each
runs in isolation: a check that raises is a failed check named after its exception, never a 500.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from flask_app import dbschema
from flask_app.db import get_db

_EXT = "readiness"


@dataclass(frozen=True)
class Check:
    """One readiness condition and whether it holds."""

    name: str
    ok: bool
    detail: str


ReadinessCheck = Callable[[Flask], Check]


def database(app: Flask) -> Check:
    """The database answers a query."""
    try:
        with get_db(app).engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return Check("database", False, f"unreachable: {type(exc).__name__}")
    return Check("database", True, "answers")


def migrations(app: Flask) -> Check:
    """The schema is at the code's head revision (`flask --app wsgi db upgrade` was run)."""
    try:
        with get_db(app).engine.connect() as conn:
            current = dbschema.current_revisions(conn)
    except SQLAlchemyError as exc:
        return Check("migrations", False, f"unreadable: {type(exc).__name__}")
    heads = dbschema.head_revisions()
    if current != heads:
        shown = ", ".join(sorted(current)) or "none"
        return Check("migrations", False, f"at {shown}, head is {', '.join(sorted(heads))}")
    return Check("migrations", True, f"at head {', '.join(sorted(heads))}")


def register(app: Flask, check: ReadinessCheck) -> None:
    """Add a condition /api/ready must see hold."""
    app.extensions.setdefault(_EXT, []).append(check)


def run(app: Flask) -> list[Check]:
    """Every registered check's result, in registration order."""
    results = []
    for check in app.extensions.get(_EXT, []):
        try:
            results.append(check(app))
        except Exception as exc:  # one broken check must not hide the others
            results.append(Check(getattr(check, "__name__", "check"), False, type(exc).__name__))
    return results


def init_app(app: Flask) -> None:
    """The checks every instance needs."""
    app.extensions[_EXT] = [database, migrations]
