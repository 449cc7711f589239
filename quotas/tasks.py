"""Celery entry points for quotas; they only call the counter store."""

from __future__ import annotations

from celery import shared_task

from .counters import get_store


@shared_task(name="quotas.release_expired", ignore_result=True)
def release_expired() -> int:
    """Release reservations of requests that never finished (their worker died)."""
    return get_store().release_expired()
