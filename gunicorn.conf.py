"""Gunicorn settings for the service (`gunicorn -c gunicorn.conf.py wsgi:app`).

A QStash delivery no longer waits inside its request: the webhook verifies it, arms the
prebooking with one conditional UPDATE and answers at once; each worker's dispatcher
(flask_app/core/dispatch.py) fires it at its instant from its own threads. Request threads
therefore serve only short work (signature checks, one claim, API calls), so a few per worker
suffice, and the workers, not the threads, are what add capacity: each is one GIL. Sizing:

- GUNICORN_WORKERS (default: the CPUs, at most 8): admission is CPU-bound Python (the
  signature check and building one statement), so one process per CPU; more only queue for
  the same CPUs. A class fires from one worker (its leader), so more workers do not spread a
  crowd's writes, they only admit it faster.
- GUNICORN_THREADS (default 8): enough to overlap one request's database round trip with
  another's Python; each worker's pool holds DB_POOL_SIZE + DB_MAX_OVERFLOW connections, so
  threads beyond that would only wait for one.

Each worker also runs the app's background runner (flask_app/background.py: the outbox, the
dispatcher's sweep), started below. Metrics: PROMETHEUS_MULTIPROC_DIR (default: a directory
of this master's own under the system temp dir) holds every worker's values, emptied when
the master starts, each exited worker marked dead, so one scrape of /metrics covers them all.
Environment overrides: GUNICORN_BIND, GUNICORN_WORKERS, GUNICORN_THREADS, GUNICORN_TIMEOUT.
"""

import os
import shutil
import sys
import tempfile

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:5000")
worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", str(min(8, os.cpu_count() or 1))))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 75  # QStash and its local stand-in reuse connections
worker_connections = 2000
accesslog = os.environ.get("GUNICORN_ACCESSLOG")  # unset: no access log (the app logs requests)
preload_app = False
# gunicorn >= 25 opens a control socket at $HOME/.gunicorn/gunicorn.ctl by default: one path
# shared by every gunicorn of the user (tests, benches, several stacks). Not used here.
control_socket_disable = True
# gunicorn's own lines (and its access log, if on) in the app's JSON format, on stderr.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "flask_app.observe.logs.JsonFormatter"}},
    "handlers": {
        "json": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"handlers": ["json"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "gunicorn.error": {"handlers": ["json"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["json"], "level": "INFO", "propagate": False},
    },
}

# Set here, in the master, before any worker imports prometheus-client (it reads it at import).
_OWN_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
METRICS_DIR = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR",
    os.path.join(tempfile.gettempdir(), f"prebook-metrics-{os.getpid()}"),
)


def on_starting(server):  # type: ignore[no-untyped-def]
    """Start with no metrics files: values of a previous run's workers would add up."""
    shutil.rmtree(METRICS_DIR, ignore_errors=True)
    os.makedirs(METRICS_DIR, exist_ok=True)


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    """Shorten the GIL switch interval so a thread whose fire instant came runs promptly."""
    sys.setswitchinterval(0.0005)


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Start the worker's background runner (outbox retries, DLQ reconcile, the sweep).

    worker.wsgi is the Flask app (wsgi:app), loaded by now.
    """
    from flask_app import background

    background.start(worker.wsgi)


def worker_exit(server, worker):  # type: ignore[no-untyped-def]
    """Let the exiting worker finish its bookings in flight, release what it holds unsent
    (a live process's sweep fires it at its instant) and close its connections."""
    from flask import Flask

    from flask_app import close

    app = getattr(worker, "wsgi", None)
    if isinstance(app, Flask):
        close(app)


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """Drop an exited worker's live gauges (its counters stay: they are the instance's)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, METRICS_DIR)  # type: ignore[no-untyped-call]


def on_exit(server):  # type: ignore[no-untyped-def]
    """Remove the metrics directory this master made for itself."""
    if _OWN_METRICS_DIR:
        shutil.rmtree(METRICS_DIR, ignore_errors=True)
