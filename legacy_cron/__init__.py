"""The legacy polling scheduler that cron-job.org pings; retiring it is deleting this package.

`init_app(app)` registers the cron delivery path (flask_app.paths), its settings
(legacy_cron.settings), the endpoint (`/api/cron/prebooking-scheduler`) and the `cron` CLI
group (`cron ping`, the local stand-in for cron-job.org). Nothing outside this package imports
it except the one line in `create_app`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from flask_app import paths
from legacy_cron import settings
from legacy_cron.cli import cron_cli
from legacy_cron.scheduler import PATH
from legacy_cron.views import bp


def _reach(config: Mapping[str, Any]) -> paths.Reach:
    if config.get("LEGACY_CRON_ENABLED"):
        return paths.Reach(paths.Coverage.ALL, "LEGACY_CRON_ENABLED=true")
    return paths.Reach(paths.Coverage.NONE, "LEGACY_CRON_ENABLED=false")


CRON = paths.DeliveryPath(
    PATH,
    "cron-job.org pings /api/cron/prebooking-scheduler every 60 s; the tick books what is due",
    paths.Recording.EXECUTE,
    polls_due=True,
    reach=_reach,
    turn_on="LEGACY_CRON_ENABLED=true",
    color="#d9822b",
)


def init_app(app: Flask) -> None:
    """Register the cron path, its settings, the blueprint and the `cron` command group."""
    paths.register(CRON)
    settings.init_app(app)
    app.register_blueprint(bp)
    app.cli.add_command(cron_cli)
