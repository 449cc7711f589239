"""Leases of the Redis counter store: one Redis grant covers many requests of a key.

The store-level scenarios drive ``RedisCounterStore`` directly, on an event loop of their
own (``asyncio.run``), with hand-built plans whose counters have fixed names (the kinds and
settle modes of ``relay.limits.build_plan``, without its per-minute keys, so a scenario
never straddles a minute), and read Redis with a plain client. The last test goes through
the real gateway. Everything here needs Redis (scripts/with-services.sh, make test-full).
"""

from __future__ import annotations

import asyncio
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest
from django.conf import settings

from quotas.counters import (
    PENDING_KEY,
    RESERVATIONS_KEY,
    USAGE_KEY,
    Check,
    Plan,
    RedisCounterStore,
    Settlement,
    apikey_key,
    user_key,
)

pytestmark = pytest.mark.skipif(
    not settings.REDIS_URL,
    reason="needs Redis: leases exist only in the Redis counter store (scripts/with-services.sh)",
)

USER, KEY = 3, 7
UKEY, KKEY = user_key(USER), apikey_key(KEY)
EST_TOKENS, EST_COST = 30, 500
MINUTE = 29_000_000
RPM = f"gw:rpm:k:{KEY}:{MINUTE}"
USER_RPM = f"gw:rpm:u:{USER}:{MINUTE}"
TPM = f"gw:tpm:k:{KEY}:{MINUTE}"
CONC = f"gw:conc:k:{KEY}"
QREQ = "gw:q:11:1700000000"  # a requests quota
QCOST = "gw:q:12:1700000000"  # a cost quota
GENEROUS = {"rpm": 10**6, "user_rpm": 10**6, "requests": 10**6, "tpm": 10**9, "cost": 10**12, "conc": 10**6}
# name -> (kind, counter, amount (None: the estimate), ttl, settle, quota id), in build_plan's order
_CHECKS = {
    "rpm": ("rpm", RPM, 1, 120, "keep", None),
    "user_rpm": ("user_rpm", USER_RPM, 1, 120, "keep", None),
    "requests": ("quota", QREQ, 1, 0, "keep", 11),
    "tpm": ("tpm", TPM, "tokens", 120, "tokens", None),
    "cost": ("quota", QCOST, "cost", 0, "cost", 12),
    "conc": ("concurrency", CONC, 1, 0, "release", None),
}
FAR = 10**10  # a reaper's "now" after every expiry


def _plan(rid, source, *, limits=GENEROUS, balance=10**12, budget=10**12, est_cost=EST_COST) -> Plan:
    checks = []
    for name, (kind, counter, amount, ttl, settle, quota_id) in _CHECKS.items():
        if limits.get(name):
            amount = {"tokens": EST_TOKENS, "cost": est_cost}.get(amount, amount)
            checks.append(Check(kind, counter, amount, limits[name], ttl, 0, 0.0, settle, quota_id=quota_id))
    return Plan(
        rid=rid,
        user_id=USER,
        key_id=KEY,
        checks=checks,
        est_tokens=EST_TOKENS,
        est_cost=est_cost,
        credit=0,
        balance=balance,
        balance_seq=1,
        key_budget=budget,
        key_spent=0,
        expires_at=time.time() + settings.RELAY_RESERVATION_TTL,
        source=source,
    )


def _finish(store, plan, tokens, cost) -> None:
    store.finish(
        plan, tokens=tokens, cost=cost, event={"request_id": plan.rid, "tokens": tokens, "cost": cost}
    )


def _run(scenario) -> None:
    """Run ``scenario(make_store, redis_client)`` on a fresh loop against an empty Redis."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    stores = []

    def make(**kwargs) -> RedisCounterStore:
        store = RedisCounterStore(settings.REDIS_URL, **kwargs)
        stores.append(store)
        return store

    async def main() -> None:
        try:
            await scenario(make, client)
        finally:
            for store in stores:
                if store.sweeper is not None:
                    store.sweeper.cancel()
                if store.pipeline.timer is not None:
                    store.pipeline.timer.cancel()
                store.pipeline.client.close()
                await store.aio.aclose()

    try:
        asyncio.run(main())
    finally:
        for store in stores:
            store.sync.close()
        client.flushdb()
        client.close()


def _int(r, key) -> int | None:
    value = r.get(key)
    return None if value is None else int(value)


def _held(r, name) -> int:
    return int(r.hget(name, "held") or 0)


def _dump(r) -> dict:
    """Every key of the database with its value."""
    out = {}
    for key in r.keys("*"):
        kind = r.type(key)
        if kind == b"string":
            out[key] = r.get(key)
        elif kind == b"hash":
            out[key] = r.hgetall(key)
        elif kind == b"zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
        elif kind == b"list":
            out[key] = r.lrange(key, 0, -1)
        else:
            raise AssertionError(f"unexpected {kind} at {key}")
    return out


async def _until(predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def _flushed(store) -> None:
    await _until(lambda: not store.busy())


def _use(i: int) -> tuple[int, int]:
    """Actual (tokens, cost) of the i-th request: around the estimates, some above, some free."""
    tokens = EST_TOKENS + i % 9 - 4  # 26 .. 34
    cost = 0 if i % 10 == 0 else EST_COST - 200 + (i % 13) * 37  # 300 .. 744
    return tokens, cost


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pending(uses: dict) -> dict:
    return {rid.encode(): f"{USER}:{KEY}:{cost}".encode() for rid, (_, cost) in uses.items() if cost}


def _charges(uses: dict) -> list:
    return [(rid, USER, KEY, cost) for rid, (_, cost) in uses.items() if cost]


# --- one grant, many requests -----------------------------------------------------------------


def test_one_lease_covers_many_requests():
    async def scenario(make, r):
        store = make(lease_size=64)
        source = object()
        plans = [_plan(f"a{i:03d}", source) for i in range(65)]
        assert await store.reserve(plans[0]) is None
        lease = plans[0].lease
        assert not lease.single
        # Redis counts the whole lease at once, on every counter and on the money
        for counter, per_request in ((RPM, 1), (USER_RPM, 1), (QREQ, 1), (CONC, 1)):
            assert _int(r, counter) == 64 * per_request, counter
        assert _int(r, TPM) == 64 * EST_TOKENS
        assert _int(r, QCOST) == 64 * EST_COST
        assert _held(r, UKEY) == _held(r, KKEY) == 64 * EST_COST
        assert r.zrange(RESERVATIONS_KEY, 0, -1) == [b"a000"]
        record = orjson.loads(r.get("gw:r:a000"))  # what the reaper would take back
        assert int(record["h"]) == -64 * EST_COST
        assert sorted(record["c"]) == sorted([[TPM, str(-64 * EST_TOKENS)], [QCOST, str(-64 * EST_COST)],
                                              [CONC, "-64"]])  # fmt: skip
        before = _dump(r)
        for plan in plans[1:64]:  # the other 63 take from the lease in process
            assert await store.reserve(plan) is None
            assert plan.lease is lease
        await asyncio.sleep(0.05)  # a flush would have had time to happen
        assert _dump(r) == before
        assert lease.inflight == 64
        assert await store.reserve(plans[64]) is None  # the lease is used up: a second one
        assert plans[64].lease is not lease and not plans[64].lease.single
        assert sorted(r.zrange(RESERVATIONS_KEY, 0, -1)) == [b"a000", b"a064"]
        assert _int(r, RPM) == _int(r, QREQ) == 128
        assert _held(r, UKEY) == 128 * EST_COST

    _run(scenario)


def test_finished_requests_are_counted_exactly():
    async def scenario(make, r):
        store = make(lease_size=64)
        source = object()
        uses: dict[str, tuple[int, int]] = {}
        plans, inflight = [], []
        for i in range(150):
            plan = _plan(f"b{i:03d}", source)
            assert await store.reserve(plan) is None
            plans.append(plan)
            inflight.append((i, plan))
            if i % 3 == 2:  # finish the two oldest: requests overlap and give back as they go
                for j, done in (inflight.pop(0), inflight.pop(0)):
                    uses[done.rid] = _use(j)
                    _finish(store, done, *_use(j))
            if i == 40:
                await _flushed(store)
                # the flush rewrote the lease's record: exactly what is still reserved
                first = plans[0].lease
                assert all(p.lease is first for p in plans)
                record = orjson.loads(r.get(f"gw:r:{first.lid}"))
                assert int(record["h"]) == -(64 * EST_COST - sum(c for _, c in uses.values()))
                undo = dict(record["c"])
                assert int(undo[TPM]) == -(64 * EST_TOKENS - sum(t for t, _ in uses.values()))
                assert int(undo[CONC]) == -64  # the slots of finished requests are free for the lease
            if i == 100:
                await asyncio.sleep(0.05)
        for j, done in inflight:
            uses[done.rid] = _use(j)
            _finish(store, done, *_use(j))
        assert len({id(p.lease) for p in plans}) >= 3
        await store.aclose()
        assert not store.busy() and not store.leases

        n = len(plans)
        assert _int(r, RPM) == _int(r, USER_RPM) == _int(r, QREQ) == n
        assert _int(r, TPM) == sum(t for t, _ in uses.values())
        assert _int(r, QCOST) == sum(c for _, c in uses.values())
        assert _int(r, CONC) == 0
        assert r.zcard(RESERVATIONS_KEY) == 0 and not r.keys("gw:r:*")
        assert r.hgetall(PENDING_KEY) == _pending(uses)
        total = sum(c for _, c in uses.values())
        assert _held(r, UKEY) == _held(r, KKEY) == total
        events = [orjson.loads(e) for e in r.lrange(USAGE_KEY, 0, -1)]
        assert sorted(e["request_id"] for e in events) == sorted(uses)
        assert {e["request_id"]: e["cost"] for e in events} == {rid: c for rid, (_, c) in uses.items()}

        store.settled(Settlement(charges=_charges(uses)))
        assert _held(r, UKEY) == _held(r, KKEY) == 0
        assert r.hlen(PENDING_KEY) == 0
        before = _dump(r)
        store.settled(Settlement(charges=_charges(uses)))  # a replayed settlement changes nothing
        assert _dump(r) == before

    _run(scenario)


def test_an_idle_lease_is_given_back_by_the_sweeper():
    async def scenario(make, r):
        store = make(lease_size=64)
        plan = _plan("idle", object())
        assert await store.reserve(plan) is None
        _finish(store, plan, 25, 420)
        await _flushed(store)
        assert _int(r, RPM) == 64 and r.zcard(RESERVATIONS_KEY) == 1  # still open: it may serve more
        await _until(lambda: r.zcard(RESERVATIONS_KEY) == 0, timeout=3.0)  # unused for LEASE_IDLE
        assert _int(r, RPM) == 1 and _int(r, TPM) == 25 and _int(r, CONC) == 0
        assert _held(r, UKEY) == 420 and not store.leases

    _run(scenario)


# --- near a limit ------------------------------------------------------------------------------


def test_near_a_limit_leases_shrink_to_one_request():
    async def scenario(make, r):
        store = make(lease_size=64)
        source = object()
        plans = [_plan(f"q{i:03d}", source, limits={"requests": 50}) for i in range(200)]
        results = await asyncio.gather(*(store.reserve(p) for p in plans))
        ok = [p for p, refusal in zip(plans, results, strict=True) if refusal is None]
        refusals = [refusal for refusal in results if refusal is not None]
        assert len(ok) == 50 and len(refusals) == 150
        assert {(x.kind, x.limit, x.remaining) for x in refusals} == {("quota", 50, 0)}
        assert _int(r, QREQ) == 50
        assert all(p.lease.single for p in ok) and r.zcard(RESERVATIONS_KEY) == 50
        for p in ok:
            _finish(store, p, 20, 100)
        await store.aclose()
        assert _int(r, QREQ) == 50 and r.zcard(RESERVATIONS_KEY) == 0
        assert _held(r, UKEY) == 50 * 100

        r.flushdb()
        store = make(lease_size=64)
        source = object()
        plans = [_plan(f"c{i:03d}", source, limits={"conc": 5}) for i in range(50)]
        results = await asyncio.gather(*(store.reserve(p) for p in plans))
        holding = [p for p, refusal in zip(plans, results, strict=True) if refusal is None]
        assert len(holding) == 5
        assert {(x.kind, x.limit, x.remaining) for x in results if x is not None} == {("concurrency", 5, 0)}
        assert _int(r, CONC) == 5
        for p in holding:
            _finish(store, p, 20, 100)
        await store.aclose()
        assert _int(r, CONC) == 0 and _held(r, UKEY) == 5 * 100
        # the slots are free again: five fit, a sixth not
        again = [_plan(f"d{i}", source, limits={"conc": 5}) for i in range(6)]
        results = await asyncio.gather(*(store.reserve(p) for p in again))
        assert [x is None for x in results] == [True] * 5 + [False]

    _run(scenario)


def test_two_workers_share_a_quota_exactly():
    async def scenario(make, r):
        workers = {"a": make(lease_size=64), "b": make(lease_size=64)}
        limits = {"requests": 1000, "rpm": 10**6}
        wins = {"a": 0, "b": 0}

        async def fire(tag: str) -> None:
            store, source = workers[tag], object()

            async def one(i: int) -> None:
                plan = _plan(f"{tag}{i:03d}", source, limits=limits)
                refusal = await store.reserve(plan)
                if refusal is None:
                    wins[tag] += 1
                    assert wins["a"] + wins["b"] <= 1000
                    _finish(store, plan, EST_TOKENS, EST_COST)
                else:
                    assert (refusal.kind, refusal.limit) == ("quota", 1000)

            await asyncio.gather(*(one(i) for i in range(700)))

        await asyncio.gather(fire("a"), fire("b"))
        first = wins["a"] + wins["b"]
        assert first <= 1000 and _int(r, QREQ) <= 1000
        assert wins["a"] and wins["b"]
        for store in workers.values():
            store.release_idle(0)
        await asyncio.gather(*(store.aclose() for store in workers.values()))
        assert _int(r, QREQ) == first  # the unused parts of the leases came back
        assert r.zcard(RESERVATIONS_KEY) == 0

        store, source, more = workers["a"], object(), 0
        while True:
            plan = _plan(f"t{more:04d}", source, limits=limits)
            refusal = await store.reserve(plan)
            if refusal is not None:
                assert (refusal.kind, refusal.remaining) == ("quota", 0)
                break
            more += 1
            assert first + more <= 1000
            _finish(store, plan, EST_TOKENS, EST_COST)
        assert first + more == 1000
        await store.aclose()
        assert _int(r, QREQ) == 1000
        assert r.llen(USAGE_KEY) == r.hlen(PENDING_KEY) == 1000
        assert _held(r, UKEY) == 1000 * EST_COST

    _run(scenario)


# --- the reaper --------------------------------------------------------------------------------


def test_a_dead_workers_lease_is_released_by_the_reaper():
    async def scenario(make, r):
        store = make(lease_size=64)
        source = object()
        uses = {}
        for i in range(6):
            plan = _plan(f"e{i}", source)
            assert await store.reserve(plan) is None
            uses[plan.rid] = (EST_TOKENS - 12 + 5 * i, EST_COST - 200 + 100 * i)  # some above the estimates
            _finish(store, plan, *uses[plan.rid])
        lease = plan.lease
        assert not lease.single
        await _flushed(store)
        last = _plan("e-inflight", source)
        assert await store.reserve(last) is None and last.lease is lease
        # the worker dies here, its request in flight: nothing more reaches Redis from it
        assert _held(r, UKEY) == 64 * EST_COST
        assert store.release_expired(now=time.time()) == 0  # not expired yet
        assert store.release_expired(now=time.time() + settings.RELAY_RESERVATION_TTL + 1) == 1
        costs = sum(c for _, c in uses.values())
        assert _held(r, UKEY) == _held(r, KKEY) == costs
        assert r.hgetall(PENDING_KEY) == _pending(uses)
        assert _int(r, TPM) == sum(t for t, _ in uses.values())
        assert _int(r, QCOST) == costs
        assert _int(r, CONC) == 0
        # unused request slots stay counted (the safe side), but nothing counts twice
        assert 7 <= _int(r, RPM) <= 64 and 7 <= _int(r, QREQ) <= 64
        assert r.zcard(RESERVATIONS_KEY) == 0 and not r.keys("gw:r:*")
        assert store.release_expired(now=FAR) == 0  # released once
        assert _held(r, UKEY) == costs
        store.settled(Settlement(charges=_charges(uses)))
        assert _held(r, UKEY) == _held(r, KKEY) == 0

    _run(scenario)


@pytest.mark.parametrize("reaped", ["in flight", "finished, not flushed"])
def test_a_lease_reaped_while_its_worker_lives_is_not_released_twice(reaped):
    async def scenario(make, r):
        store = make(lease_size=64)
        source = object()
        uses = {}
        for i in range(5):
            plan = _plan(f"g{i}", source)
            assert await store.reserve(plan) is None
            uses[plan.rid] = _use(i + 1)
            _finish(store, plan, *uses[plan.rid])
        await _flushed(store)
        late = _plan("g-late", source)
        assert await store.reserve(late) is None and not late.lease.single
        uses[late.rid] = (EST_TOKENS + 20, EST_COST + 300)  # above the estimates
        if reaped == "in flight":
            assert store.release_expired(now=FAR) == 1
            _finish(store, late, *uses[late.rid])
        else:
            _finish(store, late, *uses[late.rid])
            assert store.busy()
            assert store.release_expired(now=FAR) == 1  # before the finish reaches Redis
        await _flushed(store)
        await store.aclose()
        costs = sum(c for _, c in uses.values())
        assert _held(r, UKEY) == _held(r, KKEY) == costs
        assert r.hgetall(PENDING_KEY) == _pending(uses)
        assert _int(r, TPM) == sum(t for t, _ in uses.values())
        assert _int(r, QCOST) == costs
        assert _int(r, CONC) == 0
        assert len(uses) <= _int(r, RPM) <= 64  # the lease's grant, never counted twice
        assert r.zcard(RESERVATIONS_KEY) == 0 and not r.keys("gw:r:*")
        assert sorted(orjson.loads(e)["request_id"] for e in r.lrange(USAGE_KEY, 0, -1)) == sorted(uses)
        store.settled(Settlement(charges=_charges(uses)))
        assert _held(r, UKEY) == _held(r, KKEY) == 0

    _run(scenario)


def test_a_reaped_lease_admits_no_request_redis_does_not_count():
    async def scenario(make, r):
        limits = {"conc": 64}  # a lease of floor(64 / 32) = 2 slots
        a = make(lease_size=64)
        b = make(lease_size=1)  # another worker, one reservation per request: it takes exactly what is free
        source = object()
        long_stream = _plan("h-long", source, limits=limits)
        long_stream.expires_at = time.time() + 0.2  # a reservation TTL of 0.2 s
        assert await a.reserve(long_stream) is None
        assert _int(r, CONC) == 2 and not long_stream.lease.single
        # the stream outlives the TTL: the reaper presumes its worker dead
        await asyncio.sleep(0.25)
        assert a.release_expired(now=time.time()) == 1
        assert _int(r, CONC) == 0
        # the worker is alive; a new request of the key arrives and runs
        fresh = _plan("h-new", source, limits=limits)
        assert await a.reserve(fresh) is None
        # other workers: the limit of 64 must count the new request of worker a
        others, n, elsewhere = [], 0, object()
        while True:
            plan = _plan(f"h-b{n}", elsewhere, limits=limits)
            if await b.reserve(plan) is not None:
                break
            others.append(plan)
            n += 1
            assert n <= 100
        assert len(others) + 1 <= 64, f"{len(others) + 1} requests in flight, the limit is 64"

    _run(scenario)


# --- a failed flush ----------------------------------------------------------------------------


def test_a_failed_flush_hands_its_events_to_on_lost_once():
    async def scenario(make, r):
        store = make(lease_size=64)
        lost: list[dict] = []
        store.on_lost = lost.append
        source = object()
        first, second = _plan("f0", source), _plan("f1", source)
        assert await store.reserve(first) is None and await store.reserve(second) is None
        lease = first.lease
        assert second.lease is lease and not lease.single
        # Redis becomes unreachable: the connection drops and reconnecting fails
        good = store.pipeline.client.url
        store.pipeline.client.url = f"redis://127.0.0.1:{_dead_port()}/0"
        store.pipeline.client.protocol.transport.abort()
        _finish(store, first, 31, 450)  # raises nothing: the flush is deferred
        await _until(lambda: lease.lost)
        await _flushed(store)
        assert [e["request_id"] for e in lost] == ["f0"]
        assert store.leases.get(KEY) is not lease
        _finish(store, second, 29, 350)  # in flight on the lost lease: its event goes to on_lost at once
        await asyncio.sleep(0.05)
        assert [e["request_id"] for e in lost] == ["f0", "f1"]
        assert r.llen(USAGE_KEY) == 0 and r.hlen(PENDING_KEY) == 0  # the failed flush wrote nothing

        # the lost lease is given back as soon as Redis answers (here at once: only the
        # pipeline's connection was cut), not when its record expires 15 minutes later
        await _until(lambda: not store.orphans)
        assert r.zrange(RESERVATIONS_KEY, 0, -1) == []
        store.pipeline.client.url = good  # Redis is back: the next request asks it for a new lease
        third = _plan("f2", source)
        assert await store.reserve(third) is None
        assert third.lease is not lease
        assert sorted(r.zrange(RESERVATIONS_KEY, 0, -1)) == [b"f2"]
        _finish(store, third, 30, 500)
        await store.aclose()
        assert r.zrange(RESERVATIONS_KEY, 0, -1) == []
        assert store.release_expired(now=FAR) == 0
        assert _held(r, UKEY) == _held(r, KKEY) == 500  # only the charge that reached Redis
        assert r.hgetall(PENDING_KEY) == {b"f2": f"{USER}:{KEY}:500".encode()}
        assert _int(r, CONC) == 0
        # settlement sees all three (f0 and f1 through the usage queue): held ends at 0
        store.settled(
            Settlement(charges=[("f0", USER, KEY, 450), ("f1", USER, KEY, 350), ("f2", USER, KEY, 500)])
        )
        assert _held(r, UKEY) == _held(r, KKEY) == 0
        assert len(lost) == 2

    _run(scenario)


def test_a_finish_during_a_failing_flush_leaves_no_money_held():
    async def scenario(make, r):
        seen = asyncio.Event()
        peers: list[asyncio.StreamWriter] = []

        async def black_hole(reader, writer):  # accepts commands, never answers
            peers.append(writer)
            while await reader.read(65536):
                seen.set()

        server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
        try:
            store = make(lease_size=64)
            lost: list[dict] = []
            store.on_lost = lost.append
            source = object()
            one, two = _plan("k0", source), _plan("k1", source)
            assert await store.reserve(one) is None and await store.reserve(two) is None
            lease = one.lease
            good = store.pipeline.client.url
            store.pipeline.client.url = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
            store.pipeline.client.protocol.transport.abort()
            _finish(store, one, 40, 700)
            await asyncio.wait_for(seen.wait(), 3)  # its flush is sent; Redis never gets it
            _finish(store, two, 20, 300)  # finishes while that flush waits for its reply
            await asyncio.sleep(0.05)
            store.pipeline.client.url = good
            peers[0].transport.abort()  # the connection drops: the first flush failed
            await _until(lambda: lease.lost)
            await _flushed(store)
            # k0's flush failed and k1 finished on the same (now lost) lease: both go to the
            # usage queue, neither leaves a pending charge the lease's record does not match
            assert [e["request_id"] for e in lost] == ["k0", "k1"]
            assert r.hgetall(PENDING_KEY) == {}
            # the lost lease is given back once Redis answers (not by the reaper, later)
            await _until(lambda: not store.orphans)
            assert store.release_expired(now=FAR) == 0
            store.settled(Settlement(charges=[("k0", USER, KEY, 700), ("k1", USER, KEY, 300)]))
            assert (_held(r, UKEY), _held(r, KKEY)) == (0, 0)
        finally:
            server.close()
            for peer in peers:
                peer.transport.abort()

    _run(scenario)


# --- the source of the limits ------------------------------------------------------------------


def test_a_new_source_never_takes_from_the_old_lease():
    async def scenario(make, r):
        store = make(lease_size=64)
        uses, n = {}, 0
        old, new = object(), object()
        olds = [_plan(f"s{i}", old) for i in range(3)]
        for plan in olds:
            assert await store.reserve(plan) is None
        for i, plan in enumerate(olds[:2]):
            uses[plan.rid] = _use(i + 1)
            _finish(store, plan, *uses[plan.rid])
        old_lease = olds[0].lease
        await _flushed(store)
        avail = dict(old_lease.avail)
        news = [_plan(f"n{i}", new) for i in range(10)]
        assert await store.reserve(news[0]) is None  # the key was edited: a new KeyInfo
        new_lease = news[0].lease
        assert new_lease is not old_lease and old_lease.retired and old_lease.inflight == 1
        assert sorted(r.zrange(RESERVATIONS_KEY, 0, -1)) == [b"n0", b"s0"]  # s2 still runs on the old one
        for plan in news[1:]:
            assert await store.reserve(plan) is None and plan.lease is new_lease
        # nobody takes from the old lease again, and what its request in flight does not
        # hold went back to Redis with the new grant: only s2's reservation is left
        assert old_lease.inflight == 1 and set(old_lease.avail.values()) == {0} and old_lease.money == 0
        held_by_s2 = {c.key: c.amount for c in olds[2].checks}
        assert old_lease.granted == {key: held_by_s2[key] for key in avail}
        assert old_lease.money_granted == olds[2].est_cost
        uses["s2"] = _use(3)
        _finish(store, olds[2], *uses["s2"])  # its last request: the old lease closes
        await _flushed(store)
        assert r.zrange(RESERVATIONS_KEY, 0, -1) == [b"n0"]
        for n, plan in enumerate(news):
            uses[plan.rid] = _use(n + 4)
            _finish(store, plan, *uses[plan.rid])
        # an idle lease of an old source is closed in the same write as the new source's grant
        third = object()
        plan = _plan("t0", third)
        assert await store.reserve(plan) is None
        assert r.zrange(RESERVATIONS_KEY, 0, -1) == [b"t0"]
        uses["t0"] = (EST_TOKENS, EST_COST)
        _finish(store, plan, EST_TOKENS, EST_COST)
        await store.aclose()
        assert _int(r, RPM) == _int(r, QREQ) == len(uses) == 14
        assert _int(r, TPM) == sum(t for t, _ in uses.values())
        assert _int(r, QCOST) == sum(c for _, c in uses.values())
        assert _int(r, CONC) == 0 and r.zcard(RESERVATIONS_KEY) == 0
        assert _held(r, UKEY) == _held(r, KKEY) == sum(c for _, c in uses.values())
        assert r.hgetall(PENDING_KEY) == _pending(uses)

    _run(scenario)


# --- through the gateway -----------------------------------------------------------------------


def test_leases_through_the_gateway(gateway, world, fake):
    import redis

    from billing.models import BillingRecord, UsageLog
    from core.money import to_nanos
    from keys.models import APIKey
    from quotas.counters import get_store
    from tests.conftest import _drain_usage, settle_usage, wait_usage

    provider = world.provider(fake)
    world.route(provider, "gpt-4o-mini")
    user = world.user("leased", balance=to_nanos("5"))
    key = world.key(user, rpm_limit=100_000, tpm_limit=100_000_000, concurrency_limit=10_000)
    key_id = APIKey.objects.get(user=user).pk
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hello there"}],
    }
    r = redis.Redis.from_url(settings.REDIS_URL)

    def rpm() -> int:
        return sum(int(r.get(k) or 0) for k in r.keys(f"gw:rpm:k:{key_id}:*"))

    def call(_) -> httpx.Response:
        return httpx.post(
            f"{gateway.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json=body,
            timeout=30,
        )

    try:
        responses = [call(0)]
        assert responses[0].status_code == 200
        # the first request took a whole lease: RELAY_LEASE_SIZE requests, or 1/32 of the
        # tightest headroom (the concurrency limit: 10,000 / 32 = 312)
        assert rpm() == min(settings.RELAY_LEASE_SIZE, 10_000 // 32)
        responses += [call(i) for i in range(19)]
        with ThreadPoolExecutor(8) as pool:
            responses += list(pool.map(call, range(40)))
        assert [x.status_code for x in responses] == [200] * 60
        ids = [x.headers["x-request-id"] for x in responses]
        assert len(set(ids)) == 60
        for rid in ids:
            wait_usage(rid)
        _drain_usage()  # gives the unused leases back
        settle_usage()

        logs = UsageLog.objects.filter(request_id__in=ids)
        assert logs.count() == 60
        charged = BillingRecord.objects.filter(user=user, kind=BillingRecord.Kind.USAGE)
        assert sorted(charged.values_list("request_id", flat=True)) == sorted(ids)
        costs = sum(logs.values_list("cost", flat=True))
        assert costs > 0
        user.refresh_from_db()
        assert user.balance == to_nanos("5") - costs
        assert get_store().snapshot_user(user.pk).get("held", 0) == 0
        assert rpm() == 60
        tokens = sum(log.prompt_tokens + log.completion_tokens for log in logs)
        assert sum(int(r.get(k) or 0) for k in r.keys(f"gw:tpm:k:{key_id}:*")) == tokens
        assert int(r.get(f"gw:conc:k:{key_id}") or 0) == 0
        assert r.zcard(RESERVATIONS_KEY) == 0
    finally:
        r.close()


# --- cancelled requests ------------------------------------------------------------------------


def test_a_request_cancelled_while_its_lease_is_granted_gives_it_back():
    """A request task cancelled while Redis grants its lease (the client is gone, the
    worker shuts down): the grant is given back when the answer arrives, not 15 minutes
    later by the reaper; requests waiting for that grant carry on."""

    async def scenario(make, r):
        store = make(lease_size=64)
        source = object()
        plans = [_plan(f"c{i}", source) for i in range(4)]
        tasks = [asyncio.ensure_future(store.reserve(plan)) for plan in plans]
        await asyncio.sleep(0)  # c0 asks Redis; c1..c3 wait for its grant
        tasks[0].cancel()
        tasks[1].cancel()  # a waiter cancelled too: the others must not notice
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [type(x) for x in results[:2]] == [asyncio.CancelledError] * 2
        assert results[2:] == [None, None]
        done = plans[2:] + [_plan(f"d{i}", source) for i in range(2)]
        for plan in done[2:]:
            assert await store.reserve(plan) is None
        for plan in done:
            _finish(store, plan, EST_TOKENS, EST_COST)
        await store.aclose()
        # c0's grant went back: Redis counts exactly the four requests that ran
        assert _int(r, RPM) == _int(r, QREQ) == 4
        assert _int(r, CONC) == 0 and r.zcard(RESERVATIONS_KEY) == 0
        assert _held(r, UKEY) == _held(r, KKEY) == 4 * EST_COST

    _run(scenario)
