"""Celery entry points for billing; they only call services."""

from __future__ import annotations

import logging

import orjson
from celery import shared_task
from django.conf import settings

from . import services

logger = logging.getLogger(__name__)

BATCH = 500
LOCK_KEY = "gw:usage:settle-lock"
# Atomically move up to ARGV[1] events from the queue to the processing list.
_CLAIM = """
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items > 0 then
  redis.call('LTRIM', KEYS[1], #items, -1)
  redis.call('RPUSH', KEYS[2], unpack(items))
end
return items
"""


def settle_from_redis(max_batches: int = 100) -> int:
    """Move batches from the usage list to a processing list, settle, then drop them.

    A crash after the move leaves the batch in the processing list, which the next run
    settles first; settlement is idempotent, so replaying a settled batch charges nothing.
    """
    import redis

    from .events import PROCESSING_KEY, QUEUE_KEY

    client = redis.Redis.from_url(settings.REDIS_URL)
    settled = 0
    # one settler at a time; the lock expires by itself if its holder dies
    lock = client.lock(LOCK_KEY, timeout=120, blocking_timeout=5)
    if not lock.acquire():
        client.close()
        return 0
    try:
        claim = client.register_script(_CLAIM)
        for _ in range(max_batches):
            raw = client.lrange(PROCESSING_KEY, 0, BATCH - 1) or claim(
                keys=[QUEUE_KEY, PROCESSING_KEY], args=[BATCH]
            )
            if not raw:
                break
            events = [orjson.loads(item) for item in raw]
            settled += services.usage_settle_batch(events=events)
            client.ltrim(PROCESSING_KEY, len(raw), -1)
    finally:
        try:
            lock.release()
        except Exception:  # expired while we worked; the next settler takes over
            logger.warning("settlement lock had expired")
        client.close()
    return settled


@shared_task(name="billing.settle_usage", ignore_result=True)
def settle_usage() -> int:
    return settle_from_redis()


@shared_task(name="billing.purge_usage_logs", ignore_result=True)
def purge_usage_logs() -> int:
    return services.usage_logs_purge(older_than_days=settings.USAGE_LOG_RETENTION_DAYS)
