"""Celery's canvas guide as a task module: `tasks.py` is written for Celery, `shim_tasks.py`
is its port to the shim (only the imports differ)."""
