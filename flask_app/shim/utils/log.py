"""`celery.utils.log.get_task_logger`: a plain per-module logger."""

from __future__ import annotations

import logging


def get_task_logger(name: str) -> logging.Logger:
    """The logger for a task module (a plain logging.getLogger)."""
    return logging.getLogger(name)
