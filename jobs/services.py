"""Writes of Midjourney tasks: create at submit, update from the upstream (never
backwards), and the one charge on SUCCESS.

The charge rides on the same settlement as every relay request (``billing.services.
usage_settle_batch``: usage log, ledger row, balance, key spend, the counter store's
mirror), under the request id ``mj-charge-<task id>``, inside the transaction whose
compare-and-swap moved the task to SUCCESS: a poll and a fetch that race both try the swap,
one wins, and the ledger's unique request id would refuse a second charge anyway.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone

from billing.events import UsageEvent
from providers.midjourney import TaskState

from .models import MidjourneyTask

logger = logging.getLogger(__name__)

Status = MidjourneyTask.Status
RANK = {
    Status.NOT_START: 0,
    Status.SUBMITTED: 1,
    Status.MODAL: 2,
    Status.IN_PROGRESS: 3,
    Status.SUCCESS: 4,
    Status.FAILURE: 4,
    Status.CANCEL: 4,
}


def charge_request_id(task_id: str) -> str:
    return f"mj-charge-{task_id}"


def _when(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


def midjourney_task_create(
    *,
    task_id: str,
    upstream_task_id: str,
    user_id: int,
    api_key_id: int | None,
    provider_id: int,
    parent_id: int | None,
    action: str,
    model: str,
    mode: str,
    prompt: str,
    state: str,
    price: int,
    submit_request_id: str,
    properties: dict | None = None,
) -> MidjourneyTask:
    now = timezone.now()
    return MidjourneyTask.objects.create(
        task_id=task_id,
        upstream_task_id=upstream_task_id,
        user_id=user_id,
        api_key_id=api_key_id,
        provider_id=provider_id,
        parent_id=parent_id,
        action=action,
        model=model,
        mode=mode,
        prompt=prompt,
        state=state,
        price=price,
        submit_request_id=submit_request_id,
        properties=properties or {},
        status=Status.SUBMITTED,
        submitted_at=now,
        refreshed_at=now,
    )


def _charge(task: MidjourneyTask) -> None:
    from billing.services import usage_settle_batch

    if task.price <= 0:
        return
    event = UsageEvent(
        request_id=charge_request_id(task.task_id),
        ts=time.time(),
        user_id=task.user_id,
        key_id=task.api_key_id,
        provider_id=task.provider_id,
        price_id=None,
        request_type="midjourney",
        endpoint=f"/mj task {task.task_id} SUCCESS",
        model_requested=task.model,
        model_upstream=task.model,
        model_billed=task.model,
        providers_tried=[],
        stream=False,
        prompt_tokens=0,
        completion_tokens=0,
        cached_tokens=0,
        usage_estimated=False,
        cost=task.price,
        status_code=200,
        error="",
        latency_ms=0,
        ttft_ms=None,
        client_ip=None,
        request_bytes=0,
        response_bytes=0,
        client_disconnected=False,
    )
    usage_settle_batch(events=[event])
    MidjourneyTask.objects.filter(pk=task.pk).update(charged=task.price)
    task.charged = task.price


def midjourney_task_update(*, task: MidjourneyTask, upstream: TaskState) -> MidjourneyTask:
    """Apply the upstream's view of ``task``. A final task, or a view older than what the
    gateway has (a lower status), changes nothing but the refresh time; the status moves
    by compare-and-swap, and the move to SUCCESS charges in the same transaction."""
    now = timezone.now()
    new_status = upstream.status
    if task.final or RANK[new_status] < RANK[task.status]:
        MidjourneyTask.objects.filter(pk=task.pk).update(refreshed_at=now)
        task.refreshed_at = now
        return task
    fields = {
        "status": new_status,
        "progress": max(task.progress, upstream.progress, 100 if new_status == Status.SUCCESS else 0),
        "prompt_en": upstream.prompt_en or task.prompt_en,
        "description": upstream.description or task.description,
        "image_url": upstream.image_url or task.image_url,
        "image_urls": upstream.image_urls or task.image_urls,
        "buttons": upstream.buttons or task.buttons,
        "fail_reason": upstream.fail_reason or task.fail_reason,
        "started_at": task.started_at or _when(upstream.start_ms),
        "finished_at": task.finished_at or _when(upstream.finish_ms),
        "refreshed_at": now,
    }
    if new_status in MidjourneyTask.FINAL and fields["finished_at"] is None:
        fields["finished_at"] = now
    if new_status == Status.FAILURE and not fields["fail_reason"]:
        fields["fail_reason"] = "The upstream reported a failure."
    with transaction.atomic():
        moved = MidjourneyTask.objects.filter(pk=task.pk, status=task.status).update(**fields)
        if not moved:  # another poll got there first: take its result
            task.refresh_from_db()
            return task
        for name, value in fields.items():
            setattr(task, name, value)
        if new_status == Status.SUCCESS:
            _charge(task)
    return task


def midjourney_task_fail(*, task: MidjourneyTask, reason: str) -> MidjourneyTask:
    """Mark an unfinished task failed (nothing was charged: the charge comes with SUCCESS)."""
    state = TaskState(
        upstream_id=task.upstream_task_id, status=Status.FAILURE, progress=0, fail_reason=reason
    )
    return midjourney_task_update(task=task, upstream=state)
