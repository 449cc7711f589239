"""Notifications about Midjourney tasks, both ways.

- In: an upstream calls ``/mj/notify/<provider id>/<token>`` when its task changes. The
  token is this provider's own secret, derived from ``SECRET_KEY`` (``notify_token``), so
  one provider's callback can never touch another's tasks; ``notify_url`` gives the whole
  URL (``manage.py mj_notify_url``), and with ``MJ_NOTIFY_BASE_URL`` set every submit
  passes it to the upstream as its ``notifyHook``.
- Out: a client's ``notifyHook`` gets the task JSON (with ``mode``) after each change of
  status or progress. Deliveries run on a small pool of background threads, never on
  the request or the poll that made the change, one task's in the order of its changes;
  each is tried up to
  ``MJ_NOTIFY_ATTEMPTS`` times, waiting 1 s, 2 s, 4 s... between, and a failure is
  logged. The URL goes through ``core.outbound`` like every fetch the gateway makes for
  others (no loopback, private or link-local targets unless listed in
  ``OUTBOUND_ALLOWED_HOSTS``); a refused URL is logged and not tried again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import orjson
from django.conf import settings

from core import outbound

logger = logging.getLogger(__name__)

HOOK_TIMEOUT = 10.0
BACKOFF = 1.0  # seconds before the second attempt; doubled each time after
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mj-notify-hook")
_QUEUES: dict[str, deque] = {}  # task id -> deliveries waiting behind the one under way
_QUEUES_LOCK = threading.Lock()


def notify_token(provider_id: int) -> str:
    message = f"midjourney-notify:{provider_id}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()[:40]


def notify_token_valid(provider_id: int, token: str) -> bool:
    return hmac.compare_digest(notify_token(provider_id), token)


def notify_url(provider_id: int, base_url: str | None = None) -> str:
    base = (base_url if base_url is not None else settings.MJ_NOTIFY_BASE_URL).rstrip("/")
    return f"{base}/mj/notify/{provider_id}/{notify_token(provider_id)}"


def hook_url_error(url: object) -> str | None:
    """Why ``url`` cannot be a notifyHook, checked at submit (the address itself is
    checked at each delivery, after resolution)."""
    if not isinstance(url, str) or not url.strip():
        return "'notifyHook' must be an http or https URL."
    if len(url) > 2000:
        return "'notifyHook' is longer than 2000 characters."
    try:
        outbound.precheck(url.strip())
    except (outbound.OutboundRefused, ValueError) as exc:
        return f"'notifyHook' is refused: {exc}."
    return None


def hook_schedule(*, url: str, payload: dict, task_id: str) -> None:
    """Deliver ``payload`` to ``url`` in the background (returns at once). A task's
    deliveries go out one at a time, in the order of its changes: a retried IN_PROGRESS
    never lands after the SUCCESS that followed it."""
    item = (url, orjson.dumps(payload))
    with _QUEUES_LOCK:
        queue = _QUEUES.get(task_id)
        if queue is not None:  # a delivery of this task is under way: its drain takes this too
            queue.append(item)
            return
        _QUEUES[task_id] = deque([item])
    _POOL.submit(_drain, task_id)


def _drain(task_id: str) -> None:
    while True:
        with _QUEUES_LOCK:
            queue = _QUEUES[task_id]
            if not queue:
                del _QUEUES[task_id]
                return
            url, body = queue.popleft()
        try:
            _deliver(url, body, task_id)
        except Exception:  # never leave the task's queue stuck
            logger.exception("notifyHook delivery crashed", extra={"task_id": task_id})


def _deliver(url: str, body: bytes, task_id: str) -> bool:
    attempts = settings.MJ_NOTIFY_ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            result = asyncio.run(
                outbound.fetch(
                    url,
                    method="POST",
                    data=body,
                    headers={"content-type": "application/json"},
                    timeout=HOOK_TIMEOUT,
                    max_bytes=4096,
                )
            )
        except (outbound.OutboundRefused, ValueError) as exc:  # a URL no retry will mend
            logger.warning("notifyHook refused", extra={"task_id": task_id, "error": str(exc)[:300]})
            return False
        except outbound.OutboundFailed as exc:
            error = str(exc)[:300]
        except (TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        else:
            if 200 <= result.status < 300:
                return True
            error = f"HTTP {result.status}"
        logger.warning(
            "notifyHook delivery failed",
            extra={"task_id": task_id, "attempt": attempt, "of": attempts, "error": error},
        )
        if attempt < attempts:
            time.sleep(BACKOFF * 2 ** (attempt - 1))
    return False
