"""Reads of Midjourney tasks; a user only ever sees their own."""

from __future__ import annotations

from .models import MidjourneyTask


def midjourney_task_get(*, user_id: int, task_id: str) -> MidjourneyTask | None:
    return MidjourneyTask.objects.filter(user_id=user_id, task_id=task_id).first()


def midjourney_tasks_by_ids(*, user_id: int, task_ids: list[str]) -> list[MidjourneyTask]:
    order = {task_id: index for index, task_id in enumerate(task_ids)}
    tasks = MidjourneyTask.objects.filter(user_id=user_id, task_id__in=list(order))
    return sorted(tasks, key=lambda t: order[t.task_id])


def midjourney_tasks_unfinished(*, limit: int = 500) -> list[MidjourneyTask]:
    return list(
        MidjourneyTask.objects.exclude(status__in=MidjourneyTask.FINAL)
        .exclude(upstream_task_id="")
        .order_by("refreshed_at")[:limit]
    )


def midjourney_tasks_of_upstream(*, provider_id: int, upstream_task_id: str) -> list[MidjourneyTask]:
    """The gateway's tasks for one upstream task of one provider (a modal may share it)."""
    return list(MidjourneyTask.objects.filter(provider_id=provider_id, upstream_task_id=upstream_task_id))


def midjourney_provider_base_url(*, provider_id: int | None) -> str:
    """The base URL of the provider that made a task ("" when it is gone)."""
    from providers.models import Provider

    if provider_id is None:
        return ""
    return Provider.objects.filter(pk=provider_id).values_list("base_url", flat=True).first() or ""


def midjourney_tasks_of_user(*, user_id: int, status: str = ""):
    tasks = MidjourneyTask.objects.filter(user_id=user_id)
    if status:
        tasks = tasks.filter(status=status)
    return tasks.order_by("-submitted_at", "-id")


def midjourney_task_for_viewer(*, user, task_id: str) -> MidjourneyTask | None:
    """A task a console user may see: their own, or any for staff."""
    tasks = MidjourneyTask.objects.filter(task_id=task_id)
    if not user.is_staff:
        tasks = tasks.filter(user_id=user.pk)
    return tasks.first()
