"""Gunicorn config for bench/costs.py: the repo's gunicorn.conf.py, plus SQL counting.

Loaded with `gunicorn -c bench/hooks/gunicorn_counting.py wsgi:app`. Every setting and hook of
the repo's config is kept (its own post_worker_init runs first); then each worker counts, on
its SQLAlchemy engine, the statements it executes (`before_cursor_execute`), pool checkouts,
new connections and the most connections it held at once, and writes the counts every 100 ms
to `$BENCH_COUNT_DIR/<pid>.json`. No app code is changed.
"""

import json
import os
import runpy
import sys
import threading
import time
from pathlib import Path
from typing import Any

_REPO_CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"
_base = runpy.run_path(str(_REPO_CONF))
globals().update({k: v for k, v in _base.items() if not k.startswith("__")})
_base_post_worker_init = _base.get("post_worker_init")


def _engine(worker: Any) -> Any:
    app = getattr(worker, "wsgi", None)
    extensions = getattr(app, "extensions", None)
    if extensions is None:  # wrapped in middleware: the Flask app of wsgi.py
        extensions = sys.modules["wsgi"].app.extensions
    return extensions["db"].engine


def post_worker_init(worker: Any) -> None:
    """The repo's hook, then count this worker's SQL and connections."""
    if _base_post_worker_init is not None:
        _base_post_worker_init(worker)
    from sqlalchemy import event

    engine = _engine(worker)
    lock = threading.Lock()
    counts: dict[str, Any] = {
        "statements": 0,
        "by_verb": {},
        "checkouts": 0,
        "connects": 0,
        "checked_out": 0,
        "peak_checked_out": 0,
    }

    def statement(_conn: Any, _cursor: Any, text: str, *_args: Any) -> None:
        verb = (text.split(None, 1) or ["?"])[0].upper()
        with lock:
            counts["statements"] += 1
            counts["by_verb"][verb] = counts["by_verb"].get(verb, 0) + 1

    def checkout(*_args: Any) -> None:
        with lock:
            counts["checkouts"] += 1
            counts["checked_out"] += 1
            counts["peak_checked_out"] = max(counts["peak_checked_out"], counts["checked_out"])

    def checkin(*_args: Any) -> None:
        with lock:
            counts["checked_out"] -= 1

    def connect(*_args: Any) -> None:
        with lock:
            counts["connects"] += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    event.listen(engine, "connect", connect)
    out = Path(os.environ["BENCH_COUNT_DIR"]) / f"{os.getpid()}.json"

    def dump() -> None:
        while True:
            time.sleep(0.1)
            with lock:
                text = json.dumps(counts)
            tmp = out.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(out)

    threading.Thread(target=dump, name="bench-sql-counts", daemon=True).start()
