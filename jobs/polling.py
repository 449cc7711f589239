"""Polling unfinished Midjourney tasks: each provider's ``list-by-condition`` in batches
(Celery beat's ``jobs.poll_midjourney``; on the embedded default the relay's process runs
the same function, ``relay.app.IN_PROCESS_JOBS``). Updates go through
``services.midjourney_task_update``, so a poll racing a client's fetch never moves a task
backwards nor charges twice; a poll that dies half-way loses nothing (the next one reads
the same tasks again)."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from providers import crypto
from providers.base import Capability, Target
from providers.models import Provider
from providers.registry import get_adapter

from . import selectors, services
from .models import MidjourneyTask

logger = logging.getLogger(__name__)

BATCH = 100  # ids per list-by-condition call
TIMEOUT = 15.0


def _poll_provider(provider: Provider, tasks: list[MidjourneyTask]) -> int:
    import httpx  # here, not at import: httpx brings 25 MB of modules into every relay worker

    adapter = get_adapter(provider.type)
    if not adapter.supports(Capability.TASKS):
        return 0
    try:
        api_key = crypto.decrypt(provider.credentials_encrypted)
    except crypto.CredentialError:
        logger.warning("midjourney poll: unreadable credentials", extra={"provider": provider.pk})
        return 0
    target = Target(
        base_url=provider.base_url.rstrip("/"),
        api_key=api_key,
        upstream_model="",
        extra_headers=dict(provider.extra_headers or {}),
    )
    updated = 0
    for start in range(0, len(tasks), BATCH):
        batch: dict[str, list[MidjourneyTask]] = defaultdict(list)  # a modal may share its task's id
        for task in tasks[start : start + BATCH]:
            batch[task.upstream_task_id].append(task)
        request = adapter.task_list_request(list(batch), target)
        try:
            response = httpx.request(
                request.method, request.url, headers=request.headers, content=request.body, timeout=TIMEOUT
            )
            if response.status_code in (401, 403):  # a credential error, as on the relay
                from providers.services import provider_auto_disable

                reason = f"HTTP {response.status_code} polling tasks: {response.text[:200]}"
                provider_auto_disable(provider_id=provider.pk, reason=reason)
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            states = adapter.task_list_parse(response.content)
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("midjourney poll failed", extra={"provider": provider.pk, "error": str(exc)[:300]})
            break
        for state in states:
            for task in batch.get(state.upstream_id, ()):
                services.midjourney_task_update(task=task, upstream=state)
                updated += 1
    return updated


def midjourney_tasks_poll() -> int:
    """Fail the tasks past ``MJ_TASK_TIMEOUT``, then read every unfinished task not read
    within ``MJ_POLL_INTERVAL`` from its provider; returns how many were updated."""
    updated = services.midjourney_tasks_time_out()
    stale_before = timezone.now() - timedelta(seconds=settings.MJ_POLL_INTERVAL)
    stale = [t for t in selectors.midjourney_tasks_unfinished() if t.refreshed_at <= stale_before]
    return updated + midjourney_tasks_refresh(tasks=stale)


def midjourney_tasks_refresh(*, tasks: list[MidjourneyTask]) -> int:
    """Read these tasks from their providers now (the console's "refresh from upstream"),
    whatever their age; finished tasks are left as they are. Returns how many were read."""
    by_provider: dict[int, list[MidjourneyTask]] = defaultdict(list)
    for task in tasks:
        if not task.final and task.provider_id is not None and task.upstream_task_id:
            by_provider[task.provider_id].append(task)
    updated = 0
    for provider in Provider.objects.filter(pk__in=list(by_provider)):
        updated += _poll_provider(provider, by_provider[provider.pk])
    return updated
