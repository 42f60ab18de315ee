"""The per-process background runner: one daemon thread running registered jobs on intervals.

Jobs are registered by the parts of the app that need them (the QStash outbox retry, the DLQ
reconcile, the schedule sync; the dispatcher's sweep and the gym's pre-flight checks plug in
the same way):

    get_runner(app).register("outbox", timedelta(seconds=1), outbox.drain)

A job is `fn(now) -> result`, run inside an app context. A job registered with `lease=True`
runs in one process across every instance per interval: the process that takes its row in
`job_leases` (one conditional UPDATE, or the INSERT of a new row) for the interval.

The thread is started by gunicorn's `post_worker_init` hook (gunicorn.conf.py) and so by the dev
stack, never implicitly: tests and CLI commands call `run_once(now)` when they want a pass.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app
from sqlalchemy import insert, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flask_app.db import get_db
from flask_app.models import JobLease
from flask_app.timing import Clock, SystemClock

log = logging.getLogger(__name__)

_EXT = "background"
#: The longest the thread sleeps between passes (a job registered meanwhile waits no longer).
MAX_SLEEP = timedelta(seconds=1)

JobFn = Callable[[datetime], Any]


@dataclass
class Job:
    """A registered job: what to run, how often, and when next."""

    name: str
    interval: timedelta
    fn: JobFn
    lease: bool = False  # once per interval across every process and instance
    version: Callable[[], str | None] | None = None  # a new version takes the lease at once
    next_at: datetime | None = None  # None: at the next pass (a job runs first at start)


def process_owner() -> str:
    """A name for this process, unique across hosts and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def take_lease(
    session: Session,
    name: str,
    owner: str,
    now: datetime,
    ttl: timedelta,
    version: str | None = None,
) -> bool:
    """Hold the lease `name` until now + ttl, if it is free, expired, ours, or for another
    version; one conditional UPDATE (or the INSERT of a missing row), so one holder wins.
    """
    takeable = [JobLease.expires_at < now, JobLease.owner == owner]
    if version is not None:
        takeable.append(or_(JobLease.version.is_(None), JobLease.version != version))
    values = {"owner": owner, "expires_at": now + ttl, "version": version}
    stmt = update(JobLease).where(JobLease.name == name, or_(*takeable)).values(**values)
    if session.execute(stmt).rowcount:  # type: ignore[attr-defined]
        session.commit()
        return True
    try:
        session.execute(insert(JobLease).values(name=name, **values))
        session.commit()
    except IntegrityError:  # the row exists and someone else holds it
        session.rollback()
        return False
    return True


class Runner:
    """Runs the registered jobs of one app, in one daemon thread per process (once started)."""

    def __init__(self, app: Flask, clock: Clock) -> None:
        self.app = app
        self.clock = clock
        self.owner = process_owner()
        self.jobs: dict[str, Job] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def register(
        self,
        name: str,
        interval: timedelta,
        fn: JobFn,
        *,
        lease: bool = False,
        version: Callable[[], str | None] | None = None,
    ) -> None:
        """Run `fn(now)` every `interval` (first at the next pass); `lease`: in one process
        across every instance per interval; `version`: a changed value takes the lease at once.
        """
        with self._lock:
            self.jobs[name] = Job(name, interval, fn, lease, version)

    def run_once(self, now: datetime | None = None) -> dict[str, Any]:
        """Run every job due at `now` (default: the clock's now); their results, by name."""
        now = now or self.clock.now()
        with self._lock:
            due = [job for job in self.jobs.values() if job.next_at is None or job.next_at <= now]
        ran: dict[str, Any] = {}
        for job in due:
            job.next_at = now + job.interval
            if job.lease and not self._leased(job, now):
                continue
            ran[job.name] = self._run(job, now)
        return ran

    def _leased(self, job: Job, now: datetime) -> bool:
        try:
            with self.app.app_context(), get_db(self.app).session() as session:
                version = job.version() if job.version else None
                return take_lease(session, job.name, self.owner, now, job.interval, version)
        except Exception:  # the database or the version: skip this pass, try again next time
            log.warning("background job %s: lease not taken", job.name, exc_info=True)
            return False

    def _run(self, job: Job, now: datetime) -> Any:
        try:
            with self.app.app_context():
                return job.fn(now)
        except Exception as exc:  # one job's failure must not stop the others
            log.warning("background job %s failed", job.name, exc_info=True)
            return exc

    def start(self) -> bool:
        """Start the daemon thread (once; False if it already runs)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="background", daemon=True)
            self._thread.start()
        log.info("background runner started: %s", ", ".join(sorted(self.jobs)) or "no jobs")
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to stop after the current pass, and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self._sleep_s())

    def _sleep_s(self) -> float:
        now = self.clock.now()
        with self._lock:
            nexts = [job.next_at for job in self.jobs.values() if job.next_at is not None]
        wait = min([MAX_SLEEP, *(at - now for at in nexts)])
        return max(0.0, wait.total_seconds())


def init_app(app: Flask) -> None:
    """Give the app its runner (not started: see start())."""
    app.extensions[_EXT] = Runner(app, app.config.get("CLOCK") or SystemClock())


def get_runner(app: Flask | None = None) -> Runner:
    """The app's runner (the current app's when none is given)."""
    runner: Runner = (app or current_app).extensions[_EXT]
    return runner


def start(app: Any) -> bool:
    """Start the runner of `app` (gunicorn's post_worker_init passes worker.wsgi); False if
    `app` is not one of ours or its runner already runs."""
    runner = getattr(app, "extensions", {}).get(_EXT)
    return isinstance(runner, Runner) and runner.start()
