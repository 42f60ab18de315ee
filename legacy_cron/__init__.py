"""The legacy polling scheduler that cron-job.org pings; retiring it is deleting this package.

`init_app(app)` registers the endpoint (`/api/cron/prebooking-scheduler`) and the `cron` CLI
group (`cron ping`, the local stand-in for cron-job.org).
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Add the CRON_* settings, register the blueprint and the `cron` command group."""
    from flask_app.config import register_settings
    from legacy_cron.cli import cron_cli
    from legacy_cron.settings import CronSettings
    from legacy_cron.views import bp

    register_settings(app, CronSettings)
    app.register_blueprint(bp)
    app.cli.add_command(cron_cli)
