"""Gunicorn settings for the service (`gunicorn -c gunicorn.conf.py wsgi:app`).

A QStash delivery arrives a few seconds before its window opens and waits inside the request
with a precise timer, so hundreds of requests must be able to wait at once: gthread workers
with many threads (a waiting thread costs a stack and no CPU until its last milliseconds).
Each worker also runs the app's background runner (flask_app/background.py), started below.
Environment overrides: GUNICORN_BIND, GUNICORN_WORKERS, GUNICORN_THREADS, GUNICORN_TIMEOUT.
"""

import os
import sys

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:5000")
worker_class = "gthread"
workers = int(os.environ.get("GUNICORN_WORKERS", "1"))
threads = int(os.environ.get("GUNICORN_THREADS", "512"))
# A delivery may wait QSTASH_LEAD_SECONDS plus its stagger; the worker heartbeat is separate.
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


def post_fork(server, worker):  # type: ignore[no-untyped-def]
    """Shorten the GIL switch interval so a thread whose fire instant came runs promptly."""
    sys.setswitchinterval(0.0005)


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Start the worker's background runner (outbox retries, DLQ reconcile, schedules).

    worker.wsgi is the Flask app (wsgi:app), loaded by now.
    """
    from flask_app import background

    background.start(worker.wsgi)
