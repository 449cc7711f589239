"""A Midjourney task as midjourney-proxy clients read it (fetch, list-by-condition, the
client's notifyHook), with the gateway's own task id and the ``mode`` it ran in."""

from __future__ import annotations

from .models import MidjourneyTask


def _ms(value) -> int | None:
    return int(value.timestamp() * 1000) if value else None


def task_json(task: MidjourneyTask) -> dict:
    return {
        "id": task.task_id,
        "action": task.action,
        "mode": task.mode,
        "status": task.status,
        "progress": f"{task.progress}%",
        "prompt": task.prompt,
        "promptEn": task.prompt_en,
        "description": task.description,
        "state": task.state,
        "submitTime": _ms(task.submitted_at),
        "startTime": _ms(task.started_at),
        "finishTime": _ms(task.finished_at),
        "imageUrl": task.image_url,
        "imageUrls": [{"url": url} for url in task.image_urls],
        "failReason": task.fail_reason,
        "properties": task.properties,
        "buttons": task.buttons,
    }


def thumbnail_url(task: MidjourneyTask) -> str:
    """Where the console shows the task's image from: the gateway's own image view
    (session-authenticated, same outbound rules as /mj/image), when MJ_IMAGE_PROXY is on
    and the task has an image; else "" (the pages' Content-Security-Policy allows
    same-origin images only: the console links to ``image_link`` instead)."""
    from django.conf import settings
    from django.urls import reverse

    if not task.image_url or not settings.MJ_IMAGE_PROXY:
        return ""
    return reverse("dashboard:mj-image", args=[task.task_id])


def image_link(task: MidjourneyTask) -> str:
    """The upstream's image URL, when it is one a browser can open (http or https)."""
    return task.image_url if task.image_url.startswith(("https://", "http://")) else ""
