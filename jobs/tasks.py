"""Celery entry points for asynchronous jobs; they only call services."""

from __future__ import annotations

from celery import shared_task

from .polling import midjourney_tasks_poll


@shared_task(name="jobs.poll_midjourney", ignore_result=True)
def poll_midjourney() -> int:
    return midjourney_tasks_poll()
