"""A local QStash-compatible server (QStash v2 HTTP API) for development and tests.

Run it with `python -m qstash_dev`; use it from tests with `qstash_dev.testing.run_server`.
See `qstash_dev/README.md`. Imports nothing from the app.
"""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
