"""Review of the Redis lease design: scenarios that break a stated guarantee.

Each test here demonstrated a defect found in review (it failed before the fix it is
named after). Helpers come from tests.test_leases; everything needs Redis
(scripts/with-services.sh).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from django.conf import settings

from quotas.counters import _RESERVE, RESERVATIONS_KEY, user_key
from tests.test_leases import (
    CONC,
    QREQ,
    _finish,
    _flushed,
    _int,
    _plan,
    _run,
    _until,
)

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (scripts/with-services.sh)")


# --- the relay around reserve --------------------------------------------------------------------


def test_a_request_whose_reservation_fails_still_gets_one_usage_event(gateway, world, fake):
    """The counter store's Redis connection is down when a request reserves: the client
    gets a clean OpenAI-style 503 with Retry-After (it may retry; never a 500) and the
    request still leaves exactly one usage event (nothing reserved, nothing charged).
    Before the fix, the relay tried to finish a plan that was never reserved, which raised
    over the real error and lost the event."""
    import httpx

    from billing.models import BillingRecord
    from core.money import to_nanos
    from quotas.counters import get_store
    from tests.conftest import wait_usage
    from tests.test_leases import _dead_port

    provider = world.provider(fake)
    world.route(provider, "gpt-4o-mini")
    user = world.user("no-redis", balance=to_nanos("5"))
    key = world.key(user, rpm_limit=1000)
    store = get_store()
    client = store.pipeline.client
    good = client.url
    client.url = f"redis://127.0.0.1:{_dead_port()}/0"
    if client.protocol is not None and client.protocol.transport is not None:
        client.protocol.transport.abort()
    try:
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
    finally:
        client.url = good
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    assert response.json()["error"]["type"] == "api_error"
    assert response.json()["error"]["code"] == "store_unavailable"
    log = wait_usage(response.headers["x-request-id"])
    assert log.status_code == 503 and log.cost == 0
    assert not BillingRecord.objects.filter(user=user, kind="usage").exists()


# --- the reaper and fresh_until -----------------------------------------------------------------


def test_a_reaped_lease_is_not_refreshed_before_redis_answers():
    async def scenario(make, r):
        limits = {"conc": 64}  # a lease of 2 slots
        a, b = make(lease_size=64), make(lease_size=1)
        source = object()
        stream = _plan("h-long", source, limits=limits)
        stream.expires_at = time.time() + 0.2
        assert await a.reserve(stream) is None and not stream.lease.single
        await asyncio.sleep(0.25)
        assert a.release_expired(now=time.time()) == 1  # presumed dead: its 2 slots released
        _finish(a, stream, 20, 300)  # the stream ends; its lease stays a's key lease
        a.pipeline._flush()  # what the DEFER timer does: the flush is on its way
        fresh = _plan("h-new", source, limits=limits)
        assert await a.reserve(fresh) is None  # arrives before the reply
        await _until(lambda: stream.lease.retired)  # the reply: gone
        others, elsewhere = 0, object()
        while await b.reserve(_plan(f"h-b{others}", elsewhere, limits=limits)) is None:
            others += 1
            assert others <= 100
        assert others + 1 <= 64, f"{others + 1} requests in flight, the limit is 64"

    _run(scenario)


def test_a_reaped_lease_with_a_request_in_flight_is_not_flushed_in_a_loop():
    async def scenario(make, r):
        a = make(lease_size=64)
        source = object()
        stream = _plan("l-long", source)
        stream.expires_at = time.time() + 0.2
        assert await a.reserve(stream) is None and not stream.lease.single
        await asyncio.sleep(0.25)
        assert a.release_expired(now=time.time()) == 1  # a stream longer than the TTL
        nxt = _plan("l-next", source)
        assert await a.reserve(nxt) is None and nxt.lease is not stream.lease  # the stale lease retires
        _finish(a, nxt, 20, 300)
        await asyncio.sleep(0.1)
        sends = 0
        send = a.pipeline.client.send

        def counting(calls):
            nonlocal sends
            sends += 1
            send(calls)

        a.pipeline.client.send = counting
        await asyncio.sleep(0.5)  # nothing happens: the stream is still running
        assert sends <= 1, f"{sends} flushes in 0.5 s while nothing happened"
        assert not a.busy()
        _finish(a, stream, 40, 600)
        await _flushed(a)

    _run(scenario)


# --- the RESP client -----------------------------------------------------------------------------


def test_noscript_keeps_the_flush_ahead_of_the_reservations():
    async def scenario(make, r):
        store = make(lease_size=64)
        source, limits = object(), {"conc": 5}
        plans = [_plan(f"n{i}", source, limits=limits) for i in range(5)]
        assert await asyncio.gather(*(store.reserve(p) for p in plans)) == [None] * 5
        assert _int(r, CONC) == 5
        r.script_flush()  # a Redis restart / failover: scripts gone, connections dropped ...
        store.pipeline.client.protocol.transport.abort()
        r.script_load(_RESERVE)  # ... and another worker's EVAL reloaded only this one
        await asyncio.sleep(0.01)
        for p in plans:
            _finish(store, p, 10, 100)  # their slots are free: the next flush gives them back
        sixth = _plan("n5", source, limits=limits)
        refusal = await store.reserve(sixth)  # rides in the same batch, behind the flush
        assert refusal is None, refusal
        await _flushed(store)

    _run(scenario)


def test_reserve_does_not_hang_on_an_unresponsive_redis():
    async def scenario(make, r):
        peers: list[asyncio.StreamWriter] = []

        async def black_hole(reader, writer):
            peers.append(writer)
            while await reader.read(65536):
                pass

        server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
        store = make(lease_size=64)
        store.pipeline.client.url = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
        tasks = [asyncio.ensure_future(store.reserve(_plan(f"w{i}", object()))) for i in range(3)]
        try:
            done, pending = await asyncio.wait(tasks, timeout=5.0)  # REPLY_TIMEOUT is 3 s
            assert not pending, f"{len(pending)} requests still waiting after 5 s"
        finally:
            server.close()  # reconnecting is refused from now on
            for peer in peers:
                peer.transport.abort()  # the connection drops: every waiter gets an error
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)

    _run(scenario)


# --- performance of refusals ----------------------------------------------------------------------


def test_refusals_of_a_key_are_batched():
    async def scenario(make, r):
        store = make(lease_size=64)
        r.set(QREQ, 50)  # the quota is used up
        sends = 0
        send = store.pipeline.client.send

        def counting(calls):
            nonlocal sends
            sends += 1
            send(calls)

        store.pipeline.client.send = counting
        source = object()
        plans = [_plan(f"x{i}", source, limits={"requests": 50}) for i in range(100)]
        results = await asyncio.gather(*(store.reserve(p) for p in plans))
        assert all(x is not None and x.kind == "quota" for x in results)
        assert sends <= 5, f"{sends} Redis round trips for 100 concurrent refusals"
        assert int(r.hget(user_key(3), "held") or 0) == 0 and r.zcard(RESERVATIONS_KEY) == 0

    _run(scenario)
