"""The legacy polling scheduler that cron-job.org pings; retiring it is deleting this package.

`init_app(app)` registers the endpoint (`/api/cron/prebooking-scheduler`) and the `cron` CLI
group (`cron ping`, the local stand-in for cron-job.org).
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the blueprint and the `cron` command group."""
    from legacy_cron.cli import cron_cli
    from legacy_cron.views import bp

    app.register_blueprint(bp)
    app.cli.add_command(cron_cli)
