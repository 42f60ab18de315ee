"""`flask cron ping`: a local stand-in for cron-job.org, pinging the legacy endpoint.

Like cron-job.org it fires at second :00 of each minute (with `--every 60`), sends the bearer
secret, does not follow redirects, gives up after 30 s, and counts anything but 2xx as a failure.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import httpx
from flask import current_app
from flask.cli import AppGroup

from legacy_cron.views import URL

# cron-job.org's request timeout on the free plan (reference §2).
TIMEOUT_S = 30.0

cron_cli = AppGroup("cron", help="The legacy cron path (cron-job.org stand-in).")


def next_slot(now: datetime, every: timedelta) -> datetime:
    """The first whole multiple of `every` since the epoch after `now` (:00 for a minute)."""
    step = every.total_seconds()
    return datetime.fromtimestamp((math.floor(now.timestamp() / step) + 1) * step, UTC)


def describe(response: httpx.Response) -> str:
    """One short phrase for a response: the tick's counts, or what went wrong."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not response.is_success:
        reason = body.get("error") if isinstance(body, dict) else response.reason_phrase
        return f"FAILED ({reason})"
    if isinstance(body, dict) and body.get("ran") is True:
        keys = ("due", "claimed", "lost_claim", "deferred")
        counts = " ".join(f"{key}={body.get(key)}" for key in keys)
        return f"ok {counts} in {body.get('duration_ms')} ms"
    if isinstance(body, dict) and body.get("ran") is False:
        return f"ok, not run: {body.get('reason')}"
    return "ok"


@dataclass
class Pinger:
    """Pings `url` every `every`, aligned to wall-clock multiples of it unless `align` is off."""

    url: str
    secret: str | None
    http: httpx.Client
    every: timedelta = timedelta(seconds=60)
    align: bool = True
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    sleep: Callable[[float], None] = time.sleep
    echo: Callable[[str], None] = click.echo

    def ping(self) -> str:
        """Send one ping and return its line (never raises for network trouble)."""
        stamp = self.now().isoformat(timespec="seconds")
        headers = {"Authorization": f"Bearer {self.secret}"} if self.secret else {}
        try:
            response = self.http.post(self.url, headers=headers, timeout=TIMEOUT_S)
        except httpx.HTTPError as exc:
            return f"{stamp} POST {self.url} -> FAILED ({type(exc).__name__})"
        return f"{stamp} POST {self.url} -> {response.status_code} {describe(response)}"

    def run(self, count: int | None = None) -> None:
        """Ping `count` times (forever when None), sleeping between pings."""
        due = next_slot(self.now(), self.every) if self.align else self.now()
        done = 0
        while count is None or done < count:
            self.sleep(max(0.0, (due - self.now()).total_seconds()))
            self.echo(self.ping())
            done += 1
            later = max(due, self.now())
            due = next_slot(later, self.every) if self.align else max(due + self.every, later)


@cron_cli.command("ping")
@click.option("--every", default=60.0, show_default=True, help="Seconds between pings.")
@click.option("--url", default=None, help="Endpoint to ping [default: APP_BASE_URL + the path].")
@click.option("--count", type=int, default=None, help="Stop after N pings (default: forever).")
@click.option("--align/--no-align", default=True, help="Fire at wall-clock multiples of --every.")
def ping_command(every: float, url: str | None, count: int | None, align: bool) -> None:
    """Ping the legacy endpoint like cron-job.org does, one line per ping."""
    if every <= 0:
        raise click.BadParameter("must be positive", param_hint="--every")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per ping is ours to print
    target = url or current_app.config["APP_BASE_URL"].rstrip("/") + URL
    secret = current_app.config.get("CRON_SECRET")
    if not secret:
        click.echo("warning: CRON_SECRET is not set; the endpoint will answer 503", err=True)
    click.echo(f"pinging {target} every {every:g} s{' at :00' if align and every == 60 else ''}")
    with httpx.Client(follow_redirects=False) as http:
        pinger = Pinger(target, secret, http, timedelta(seconds=every), align)
        try:
            pinger.run(count)
        except KeyboardInterrupt:
            click.echo("stopped")
