"""Stream checkpoints in the Redis counter store (issue 13 item 2): driven at the store level
as in tests/test_leases.py; the real kill -9 of a gunicorn worker is in
tests/test_faults_redis.py."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from django.conf import settings

from billing.events import UsageEvent
from quotas.counters import CHECKPOINT_PREFIX, PENDING_KEY, USAGE_KEY, WORKER_PREFIX, Settlement
from tests.test_leases import KEY, KKEY, QCOST, TPM, UKEY, USER, _flushed, _held, _plan, _run

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="checkpoints live in Redis (make test-full)")


def _event(rid: str, completion: int, cost: int) -> UsageEvent:
    return UsageEvent.coerce(
        {"request_id": rid, "ts": 0.0, "user_id": USER, "key_id": KEY, "prompt_tokens": 5,
         "completion_tokens": completion, "cost": cost, "usage_estimated": True}
    )  # fmt: skip


def _charge(cost: int) -> bytes:
    return f"{USER}:{KEY}:{cost}".encode()


async def _checkpoint(store) -> None:
    store.checkpoint_due = True
    store.pipeline.poke(soon=True)
    await asyncio.sleep(0)
    await _flushed(store)


def test_a_dead_workers_checkpoints_are_billed_once_and_a_late_finish_adds_nothing():
    async def scenario(make, r):
        store = make(lease_size=8)
        source = object()
        first, second = _plan("s-1", source), _plan("s-2", source)
        assert await store.reserve(first) is None and await store.reserve(second) is None
        lid = first.lease.lid
        produced = {"s-1": 10, "s-2": 40}
        store.watch(first, lambda: _event("s-1", produced["s-1"], produced["s-1"] * 3))
        store.watch(second, lambda: _event("s-2", produced["s-2"], produced["s-2"] * 3))
        await _checkpoint(store)
        assert sorted(r.hgetall(CHECKPOINT_PREFIX + lid)) == [b"s-1", b"s-2"]

        # the first stream ends normally: its checkpoint goes with its own event
        store.finish(first, tokens=17, cost=51, event=_event("s-1", 12, 51))
        await _flushed(store)
        assert sorted(r.hgetall(CHECKPOINT_PREFIX + lid)) == [b"s-2"]

        # the worker dies (its heartbeat expires): the reaper bills the second from its checkpoint
        store.beat.cancel()
        store.checkpointer.cancel()
        r.delete(WORKER_PREFIX + store.worker)
        assert store.release_expired() == 1
        queued = [orjson.loads(raw) for raw in r.lrange(USAGE_KEY, 0, -1)]
        assert [(e["request_id"], e["cost"]) for e in queued] == [("s-1", 51), ("s-2", 120)]
        assert r.hgetall(PENDING_KEY) == {
            b"s-1": f"{USER}:{KEY}:51".encode(),
            b"s-2": f"{USER}:{KEY}:120".encode(),
        }
        assert _held(r, UKEY) == _held(r, KKEY) == 51 + 120  # exactly the pending charges
        assert not r.exists(CHECKPOINT_PREFIX + lid)
        # its tokens and cost count on its TPM and cost-quota counters, as a finished one's do
        assert int(r.get(TPM)) == 17 + (5 + 40) and int(r.get(QCOST)) == 51 + 120

        # it was only stalled: its stream finishes late; the checkpoint's charge stands
        store.finish(second, tokens=60, cost=165, event=_event("s-2", 55, 165))
        await _flushed(store)
        assert r.hget(PENDING_KEY, "s-2") == _charge(120)
        assert _held(r, UKEY) == _held(r, KKEY) == 51 + 120
        store.settled(Settlement(charges=[("s-1", USER, KEY, 51), ("s-2", USER, KEY, 120)]))
        assert _held(r, UKEY) == _held(r, KKEY) == 0

    _run(scenario)
