"""The durable usage queue: every relay request emits exactly one usage event here.

Two implementations behind one interface, chosen by REDIS_URL:
- ``RedisUsageQueue``: events are appended to the Redis list ``gw:usage`` (one pipelined
  RPUSH per flush); Celery's ``billing.tasks.settle_usage`` moves batches to a processing
  list, settles them idempotently and removes them, so a crash mid-batch replays it.
- ``LocalUsageQueue`` (embedded default): events are settled by the same process, in a
  thread, in batches.

Workers buffer events for at most ``FLUSH_INTERVAL`` seconds (or ``FLUSH_SIZE`` events)
so the relay pays one round trip per batch, not per request; shutdown flushes the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings

from billing.events import QUEUE_KEY, UsageEvent

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.02
FLUSH_SIZE = 200


def _settle(events: list[UsageEvent]) -> None:
    from billing.services import usage_settle_batch

    usage_settle_batch(events=events)


class UsageQueue:
    def __init__(self) -> None:
        self.buffer: list[UsageEvent] = []
        self.flusher: asyncio.Task | None = None
        self.wakeup: asyncio.Event | None = None
        self.closing = False

    def push(self, event: UsageEvent) -> None:
        self.buffer.append(event)
        if self.flusher is None or self.flusher.done():
            self._start()
        elif len(self.buffer) >= FLUSH_SIZE and self.wakeup is not None:
            self.wakeup.set()

    def _start(self) -> None:
        self.wakeup = asyncio.Event()
        self.flusher = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self.buffer:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), FLUSH_INTERVAL)
            self.wakeup.clear()
            await self.flush()

    async def flush(self) -> None:
        while self.buffer:
            batch, self.buffer = self.buffer, []
            try:
                await self._write(batch)
            except Exception:
                # keep the events and try again; losing usage is never an option
                logger.exception("usage flush failed; retrying", extra={"events": len(batch)})
                self.buffer[:0] = batch
                await asyncio.sleep(0.5)
                if self.closing:
                    raise

    async def close(self) -> None:
        self.closing = True
        if self.flusher is not None and not self.flusher.done():
            self.flusher.cancel()
        await self.flush()

    async def _write(self, batch: list[UsageEvent]) -> None:
        raise NotImplementedError


class LocalUsageQueue(UsageQueue):
    async def _write(self, batch: list[UsageEvent]) -> None:
        await sync_to_async(_settle, thread_sensitive=False)(batch)


class RedisUsageQueue(UsageQueue):
    def __init__(self, url: str) -> None:
        super().__init__()
        import redis.asyncio as redis

        pool = redis.BlockingConnectionPool.from_url(url, max_connections=8, timeout=10)
        self.client = redis.Redis(connection_pool=pool)

    async def _write(self, batch: list[UsageEvent]) -> None:
        await self.client.rpush(QUEUE_KEY, *(orjson.dumps(e) for e in batch))
        if settings.CELERY_TASK_ALWAYS_EAGER:
            # Redis without a Celery broker: settle right here.
            from billing.tasks import settle_from_redis

            await sync_to_async(settle_from_redis, thread_sensitive=False)()

    async def close(self) -> None:
        await super().close()
        await self.client.aclose()


def make_queue() -> UsageQueue:
    if settings.REDIS_URL:
        return RedisUsageQueue(settings.REDIS_URL)
    return LocalUsageQueue()
