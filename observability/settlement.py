"""How far settlement is behind: read by /health/ready and the /metrics scrape."""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from django.conf import settings

from billing.events import PROCESSING_KEY, QUEUE_KEY, SETTLED_AT_KEY

# usage queues of this process that settle in process (the embedded default), whose
# buffers are the whole backlog; the relay adds its queue at start-up
LOCAL_QUEUES: set = set()


@dataclass(frozen=True, slots=True)
class QueueState:
    backlog: int  # usage events waiting for settlement
    oldest_wait: float  # seconds the oldest of them has waited (0 without backlog)
    last_run_age: float | None  # seconds since a settlement run last finished (Redis only)


def usage_queue_state() -> QueueState:
    if not settings.REDIS_URL:
        return _local_state()
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.llen(QUEUE_KEY).llen(PROCESSING_KEY).get(SETTLED_AT_KEY)
            pipe.lindex(PROCESSING_KEY, 0).lindex(QUEUE_KEY, 0)
            queued, processing, settled_at, oldest_processing, oldest_queued = pipe.execute()
    finally:
        client.close()
    now = time.time()
    oldest = oldest_processing or oldest_queued
    try:
        waited = now - float(orjson.loads(oldest)["ts"]) if oldest else 0.0
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        waited = 0.0
    return QueueState(
        backlog=queued + processing,
        oldest_wait=max(waited, 0.0),
        last_run_age=now - float(settled_at) if settled_at else None,
    )


def _local_state() -> QueueState:
    events = [event for queue in list(LOCAL_QUEUES) for event in list(queue.buffer)]
    stamps = [event.ts for event in events if hasattr(event, "ts")]
    return QueueState(
        backlog=len(events),
        oldest_wait=max(time.time() - min(stamps), 0.0) if stamps else 0.0,
        last_run_age=None,
    )
