"""A Midjourney task's image fetched by the gateway (``GET /mj/image/{id}`` on the relay,
thumbnails in the console) under ``core.outbound``'s rules: public addresses only, but
the task's own provider (an address the operator chose) and ``OUTBOUND_ALLOWED_HOSTS``;
at most ``MJ_IMAGE_MAX_BYTES``; image types only."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from yarl import URL

from core import outbound

logger = logging.getLogger(__name__)

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


@dataclass(frozen=True, slots=True)
class Image:
    content_type: str
    body: bytes


class ImageUnavailable(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _host_port(url: str) -> str:
    try:
        parsed = URL(url)
    except ValueError:
        return ""
    return f"{parsed.host}:{parsed.port}" if parsed.host and parsed.port else ""


async def midjourney_image_fetch(*, image_url: str, provider_base_url: str, task_id: str) -> Image:
    trusted = [h for h in (_host_port(provider_base_url),) if h]
    try:
        result = await outbound.fetch(
            image_url,
            timeout=max(settings.OUTBOUND_TIMEOUT, 30),
            max_bytes=settings.MJ_IMAGE_MAX_BYTES,
            trusted=trusted,
        )
    except outbound.OutboundRefused as exc:
        logger.warning("midjourney image refused", extra={"task_id": task_id, "error": str(exc)[:300]})
        raise ImageUnavailable(
            "image_refused", "The task's image URL is not one the gateway fetches from."
        ) from None
    except (outbound.OutboundFailed, TimeoutError, OSError, ValueError) as exc:
        logger.warning("midjourney image fetch failed", extra={"task_id": task_id, "error": str(exc)[:300]})
        raise ImageUnavailable("image_unavailable", "The task's image could not be fetched.") from None
    content_type = result.content_type.split(";", 1)[0].strip().lower()
    if result.status != 200 or content_type not in IMAGE_TYPES:
        raise ImageUnavailable(
            "image_unavailable",
            f"The image host answered HTTP {result.status} ({content_type or 'no type'}).",
        )
    if result.truncated:
        raise ImageUnavailable(
            "image_too_large", f"The image is larger than {settings.MJ_IMAGE_MAX_BYTES} bytes."
        )
    return Image(content_type, result.body)
