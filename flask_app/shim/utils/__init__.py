"""Helpers mirroring `celery.utils` (only what task modules import)."""
