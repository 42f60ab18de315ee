"""/api/cron/prebooking-scheduler (`bp`): check CRON_SECRET, run one tick, say what it did."""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, current_app, jsonify

from flask_app.api.auth import require_bearer
from flask_app.api.errors import error
from legacy_cron.scheduler import TickUnavailable, run_tick

log = logging.getLogger(__name__)

bp = Blueprint("legacy_cron", __name__)

URL = "/api/cron/prebooking-scheduler"


@bp.errorhandler(TickUnavailable)
def _unavailable(exc: TickUnavailable) -> tuple[Response, int]:
    # Non-2xx only when the tick could not run: cron-job.org's failure emails then mean something.
    log.error("cron tick could not run: %s", exc, exc_info=exc.__cause__)
    return error(503, f"{exc}; the tick did not run")


# Both spellings are routes of their own: a trailing-slash redirect (308) would count as a
# failure at cron-job.org, which does not follow redirects.
@bp.route(URL, methods=["GET", "POST"])
@bp.route(URL + "/", methods=["GET", "POST"])
def prebooking_scheduler() -> Response:
    """Run one tick of the legacy scheduler (cron-job.org calls this every minute)."""
    require_bearer("CRON_SECRET")
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    if not app.config["LEGACY_CRON_ENABLED"]:
        # 200, so cron-job.org keeps the job alive until the last rollout phase removes it.
        return jsonify({"ran": False, "reason": "LEGACY_CRON_ENABLED is false"})
    return jsonify(run_tick(app).to_json())
