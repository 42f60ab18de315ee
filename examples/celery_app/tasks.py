"""A Celery-style task module: `tasks.py` is written for Celery, `shim_tasks.py` is its port.

The two files differ only in their imports (`diff tasks.py shim_tasks.py`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from celery import shared_task
from celery.exceptions import Ignore
from celery.schedules import crontab
from celery.signals import task_success

ATTEMPTS: dict[str, int] = {}
SUCCEEDED: list[str] = []


@shared_task(ignore_result=False)
def add_together(a: int, b: int) -> int:
    return a + b


@shared_task(bind=True, max_retries=3, default_retry_delay=0)
def flaky_fetch(self, key: str, failures: int) -> dict:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if self.request.retries < failures:
        raise self.retry(exc=ConnectionError(f"{key} unavailable"), countdown=0)
    return {"key": key, "retries": self.request.retries, "task_id": self.request.id}


@shared_task(bind=True)
def process(self, total: int) -> dict:
    for done in range(1, total + 1):
        self.update_state(state="PROGRESS", meta={"current": done, "total": total})
    return {"current": total, "total": total, "status": "done"}


@shared_task
def invoice(lines: list, issued_at: datetime) -> dict:
    total = sum((Decimal(str(price)) * qty for price, qty in lines), Decimal("0"))
    return {"total": total, "due_at": issued_at + timedelta(days=30)}


@shared_task(autoretry_for=(KeyError,), retry_backoff=True, max_retries=1)
def always_broken() -> None:
    raise KeyError("missing")


@shared_task
def skip_me() -> None:
    raise Ignore()


@task_success.connect
def remember_success(sender=None, result=None, **kwargs):
    SUCCEEDED.append(sender.name)


beat_schedule = {
    "add-every-5-minutes": {
        "task": add_together.name,
        "schedule": crontab(minute="*/5"),
        "args": (16, 16),
    },
    "weekday-report": {
        "task": process.name,
        "schedule": crontab(minute=0, hour=7, day_of_week="mon-fri"),
        "args": (3,),
    },
    "every-hour": {"task": add_together.name, "schedule": 3600.0, "args": (1, 1)},
}
