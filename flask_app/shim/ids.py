"""Task ids (`celery.uuid`)."""

from __future__ import annotations

import uuid as uuid_module


def uuid() -> str:
    """A new task id (uuid4 string)."""
    return str(uuid_module.uuid4())
