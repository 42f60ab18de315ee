"""/admin/parity (HTML with plots), /api/parity (JSON) and /metrics (Prometheus text)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from flask_app.api.auth import require, require_admin_page
from flask_app.api.errors import error
from flask_app.api.tokens import Scope
from flask_app.observe import comparison, metrics, parity, parity_render

bp = Blueprint("admin", __name__)


@bp.errorhandler(parity.SinceError)
def _bad_since(exc: parity.SinceError) -> tuple[Response, int]:
    return error(422, str(exc))


@bp.get("/api/parity")
def parity_json() -> Response:
    require(Scope.ADMIN)
    report = comparison.current_report(request.args.get("since", "24h"))
    return jsonify(parity_render.to_data(report))


@bp.get("/admin/parity")
def parity_page() -> Response:
    require_admin_page()
    report = comparison.current_report(request.args.get("since", "24h"))
    return Response(parity_render.to_html(report), mimetype="text/html")


@bp.get("/metrics")
def metrics_text() -> Response:
    # Public like most scrape targets: counts and timings only, no ids, emails or tokens.
    found = metrics.get_metrics()
    if found is not None:
        found.set_flags(current_app.config)
    body = found.exposition() if found is not None else b""
    return Response(body, content_type=metrics.CONTENT_TYPE)
