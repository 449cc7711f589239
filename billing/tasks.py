"""Celery entry points for billing; they only call services."""

from __future__ import annotations

import logging
import secrets
import threading
import time

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
# The settle lock: a token with a short expiry that its owner renews while it works, so a
# settler that dies (SIGKILL, OOM, a lost host) is replaced within SETTLE_LOCK_TTL seconds.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Drop a settled batch from the processing list only while still holding the lock: an
# owner whose lock expired (it stalled past the TTL) and was taken over must not trim the
# batch the new owner is reading, which would drop events nobody settled.
_TRIM = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
return 1
"""


class _SettleLock:
    """One settler at a time, with a heartbeat: a thread renews the lock every third of its
    TTL while the owner works, and ``lost`` is set once the owner no longer holds it."""

    def __init__(self, client, ttl: float) -> None:
        self.client = client
        self.ttl_ms = max(int(ttl * 1000), 1000)
        self.token = secrets.token_hex(16)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._beat: threading.Thread | None = None

    def acquire(self, wait: float) -> bool:
        deadline = time.monotonic() + wait
        while not self.client.set(LOCK_KEY, self.token, nx=True, px=self.ttl_ms):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        self._beat = threading.Thread(target=self._heartbeat, name="settle-lock", daemon=True)
        self._beat.start()
        return True

    def _heartbeat(self) -> None:
        interval = self.ttl_ms / 3000
        while not self._stop.wait(interval):
            try:
                held = self._renew(keys=[LOCK_KEY], args=[self.token, self.ttl_ms])
            except Exception:  # Redis unreachable for a moment: the next beat tries again
                logger.warning("could not renew the settlement lock", exc_info=True)
                continue
            if not held:
                logger.warning("settlement lock lost: another settler took over")
                self.lost.set()
                return

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        try:
            self._release(keys=[LOCK_KEY], args=[self.token])
        except Exception:  # it expires by itself
            logger.warning("could not release the settlement lock", exc_info=True)


def settle_from_redis(max_batches: int = 100) -> int:
    """Move batches from the usage list to a processing list, settle, then drop them.

    A crash after the move leaves the batch in the processing list, which the next run
    settles first; settlement is idempotent, so replaying a settled batch charges nothing.
    One settler runs at a time: the lock expires ``SETTLE_LOCK_TTL`` seconds after its
    owner stops renewing it, so a killed worker's successor resumes within that long.
    """
    import redis

    from .events import PROCESSING_KEY, QUEUE_KEY, SETTLED_AT_KEY

    client = redis.Redis.from_url(settings.REDIS_URL)
    settled = 0
    lock = _SettleLock(client, settings.SETTLE_LOCK_TTL)
    if not lock.acquire(wait=min(5.0, settings.SETTLE_LOCK_TTL)):
        client.close()
        return 0
    try:
        claim = client.register_script(_CLAIM)
        trim = client.register_script(_TRIM)
        for _ in range(max_batches):
            if lock.lost.is_set():
                break
            raw = client.lrange(PROCESSING_KEY, 0, BATCH - 1) or claim(
                keys=[QUEUE_KEY, PROCESSING_KEY], args=[BATCH]
            )
            if not raw:
                break
            events = [orjson.loads(item) for item in raw]
            settled += services.usage_settle_batch(events=events)
            if not trim(keys=[PROCESSING_KEY, LOCK_KEY], args=[lock.token, len(raw)]):
                # the batch stays for the new owner, which replays it (charging nothing twice)
                logger.warning("settlement lock lost mid-batch; the next settler replays it")
                break
        client.set(SETTLED_AT_KEY, time.time())  # /health/ready: settlement is running
    finally:
        lock.release()
        client.close()
    return settled


@shared_task(name="billing.settle_usage", ignore_result=True)
def settle_usage() -> int:
    return settle_from_redis()


@shared_task(name="billing.purge_usage_logs", ignore_result=True)
def purge_usage_logs() -> int:
    return services.usage_logs_purge(older_than_days=settings.USAGE_LOG_RETENTION_DAYS)
