"""Writes of Midjourney tasks: create at submit, update from the upstream (never
backwards), and the one refund of a task that did not succeed.

The charge is the submit's own usage event (the relay settles it like any request: one
usage log, one ledger row). A task that ends in FAILURE or CANCEL, or is failed by the
timeout, gets the charge back as a REFUND ledger row (``accounts.services.
user_adjust_balance``: balance, ledger, the counter store's mirror), inside the
transaction whose compare-and-swap moved the task to its final status: a poll, a notify
and a fetch that race all try the swap, one wins, and the refund's own guarded update
(``refunded`` from 0) lets only one through anyway.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

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
    notify_hook: str = "",
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
        charged=price,
        submit_request_id=submit_request_id,
        notify_hook=notify_hook,
        properties=properties or {},
        status=Status.SUBMITTED,
        submitted_at=now,
        refreshed_at=now,
    )


def refund_request_id(task_id: str) -> str:
    return f"mj-refund-{task_id}"


def _refund(task: MidjourneyTask) -> None:
    """Give back what the submit charged, once: the guarded update below lets one caller
    through even when a poll, a notify and a fetch finish the task together. Runs inside
    the transaction that moved the task to its final status."""
    from accounts.services import user_adjust_balance
    from billing.models import BillingRecord

    amount = task.charged
    if amount <= 0 or task.refunded:
        return
    if not MidjourneyTask.objects.filter(pk=task.pk, refunded=0).update(refunded=amount):
        task.refresh_from_db(fields=["refunded"])
        return
    task.refunded = amount
    user_adjust_balance(
        user=task.user_id,
        amount=amount,
        kind=BillingRecord.Kind.REFUND,
        description=f"{task.model} task {task.task_id}: {task.status}"[:255],
        request_id=refund_request_id(task.task_id),
        api_key_id=task.api_key_id,
    )
    if task.api_key_id:  # the key's budget gets it back too
        _unspend(task.api_key_id, amount)


def _unspend(key_id: int, amount: int) -> None:
    from keys.models import APIKey
    from quotas.counters import Settlement, get_store

    APIKey.objects.filter(pk=key_id).update(spent=F("spent") - amount)
    spent = APIKey.objects.filter(pk=key_id).values_list("spent", flat=True).first()
    if spent is not None:
        stamp = time.time_ns()
        transaction.on_commit(
            lambda: get_store().settled(Settlement(charges=[], spent={key_id: (spent, stamp)}))
        )


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
    changed = new_status != task.status or fields["progress"] != task.progress
    with transaction.atomic():
        moved = MidjourneyTask.objects.filter(pk=task.pk, status=task.status).update(**fields)
        if not moved:  # another poll got there first: take its result
            task.refresh_from_db()
            return task
        for name, value in fields.items():
            setattr(task, name, value)
        if new_status in (Status.FAILURE, Status.CANCEL):
            _refund(task)
        if changed and task.notify_hook:
            _notify_on_commit(task)
    return task


def _notify_on_commit(task: MidjourneyTask) -> None:
    from .hooks import hook_schedule
    from .wire import task_json

    payload, url, task_id = task_json(task), task.notify_hook, task.task_id
    transaction.on_commit(lambda: hook_schedule(url=url, payload=payload, task_id=task_id))


def midjourney_tasks_time_out() -> int:
    """Fail (and refund) every unfinished task submitted more than ``MJ_TASK_TIMEOUT``
    seconds ago; returns how many."""
    before = timezone.now() - timedelta(seconds=settings.MJ_TASK_TIMEOUT)
    stuck = MidjourneyTask.objects.exclude(status__in=MidjourneyTask.FINAL).filter(submitted_at__lt=before)
    failed = 0
    for task in stuck[:500]:
        if midjourney_task_time_out(task=task).status == Status.FAILURE:
            failed += 1
    return failed


def midjourney_task_time_out(*, task: MidjourneyTask) -> MidjourneyTask:
    """The task failed by the timeout when it is unfinished and older than it."""
    if task.final or timezone.now() - task.submitted_at < timedelta(seconds=settings.MJ_TASK_TIMEOUT):
        return task
    return midjourney_task_fail(task=task, reason=f"Timed out after {settings.MJ_TASK_TIMEOUT} s.")


def midjourney_task_fail(*, task: MidjourneyTask, reason: str) -> MidjourneyTask:
    """Mark an unfinished task failed (and refund it)."""
    state = TaskState(
        upstream_id=task.upstream_task_id, status=Status.FAILURE, progress=0, fail_reason=reason
    )
    return midjourney_task_update(task=task, upstream=state)
