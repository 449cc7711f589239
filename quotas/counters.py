"""The counter store: rate limits, concurrency, quotas and budget reservations.

Every relay request makes two round trips here:

1. ``reserve``: one atomic step (a Lua script on Redis; a lock-protected function in
   process) that checks every limit of the request — key RPM/TPM/concurrency, user RPM,
   each active quota of the key and of the user, the user's balance plus credit limit
   and the key's own budget against the request's estimate — and, only if all pass,
   counts the request and reserves the estimate. There is no check-then-increment gap
   anywhere, so 200 concurrent requests against a 50-request quota give exactly 50.
2. ``finish``: turns the reservation into the actual use (tokens, cost), releases the
   concurrency slot and queues the usage event, again in one atomic step.

Settlement (``billing.services``) later moves the charge from the store's ``held``
amount into the database balance, and updates the store's mirror of that balance in
the same atomic step, so the money available to new requests never counts a charge
twice nor forgets one. Reservations of requests whose worker died expire and are
released by ``release_expired`` (a Celery beat task, or the relay itself in process).

Amounts are integer nanos. Lua compares with doubles (exact to 2**53 nanos, about
$9 million per user); stored values are always changed with INCRBY/HINCRBY on integer
strings, which Redis does in exact 64-bit arithmetic.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import orjson
from django.conf import settings

from .resp import RespClient, Script

PREFIX = "gw:"
USAGE_KEY = PREFIX + "usage"
PENDING_KEY = PREFIX + "pending"  # request id -> "user:key:cost", charges awaiting settlement
RESERVATIONS_KEY = PREFIX + "resv"  # sorted set: request id scored by expiry time


def user_key(user_id: int) -> str:
    return f"{PREFIX}u:{user_id}"


def apikey_key(key_id: int) -> str:
    return f"{PREFIX}k:{key_id}"


def reservation_key(rid: str) -> str:
    return f"{PREFIX}r:{rid}"


@dataclass(slots=True)
class Check:
    """One counter that must stay within ``limit`` after adding ``amount``."""

    kind: str  # "rpm", "tpm", "concurrency", "user_rpm", "quota"
    key: str
    amount: int
    limit: int
    ttl: int  # seconds; 0 keeps the counter forever
    init: int  # value of a counter that does not exist yet (quota use recorded in the database)
    reset_at: float  # epoch seconds when the window restarts (headers, Retry-After)
    settle: str  # how finish corrects it: "keep" (requests), "tokens", "cost", "release" (concurrency)
    quota_id: int | None = None


@dataclass(slots=True)
class Plan:
    rid: str
    user_id: int
    key_id: int
    checks: list[Check]
    est_tokens: int
    est_cost: int
    credit: int  # how far below zero the balance may go
    balance: int  # the database balance known to the relay (first use of the mirror only)
    balance_seq: int  # ledger row id behind that balance
    key_budget: int | None
    key_spent: int
    expires_at: float


@dataclass(slots=True)
class Refusal:
    kind: str  # a Check.kind, "balance" or "budget"
    limit: int
    remaining: int
    reset_at: float
    check: Check | None = None


@dataclass(slots=True)
class Settlement:
    """What settlement tells the store after a database commit."""

    charges: list[tuple[str, int, int | None, int]]  # (request id, user id, key id, cost)
    balances: dict[int, tuple[int, int]] = field(default_factory=dict)  # user -> (balance, seq)
    spent: dict[int, tuple[int, int]] = field(default_factory=dict)  # key -> (spent, seq)


_UNDONE = frozenset({"tokens", "cost", "release"})  # what releasing an abandoned reservation takes back


def finish_deltas(plan: Plan, tokens: int, cost: int) -> list[tuple[str, int]]:
    deltas = []
    for check in plan.checks:
        if check.settle == "tokens":
            delta = tokens - check.amount
        elif check.settle == "cost":
            delta = cost - check.amount
        elif check.settle == "release":
            delta = -check.amount
        else:
            continue
        if delta:
            deltas.append((check.key, delta))
    return deltas


# --- Redis ---------------------------------------------------------------------------------

_RESERVE = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local base = 1 + (i - 1) * 5
  local cur = tonumber(redis.call('GET', KEYS[4 + i]) or ARGV[base + 4])
  if cur + tonumber(ARGV[base + 1]) > tonumber(ARGV[base + 2]) then
    return {'limit', i, tostring(cur)}
  end
end
local a = 1 + n * 5
local est, credit = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
if redis.call('HSETNX', KEYS[1], 'bal', ARGV[a + 3]) == 1 then
  redis.call('HSET', KEYS[1], 'seq', ARGV[a + 4])
end
local avail = tonumber(redis.call('HGET', KEYS[1], 'bal')) + credit
  - tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
if avail <= 0 or avail < est then
  return {'balance', 0, tostring(avail)}
end
if ARGV[a + 5] ~= '' then
  if redis.call('HSETNX', KEYS[2], 'spent', ARGV[a + 6]) == 1 then
    redis.call('HSET', KEYS[2], 'seq', '0')
  end
  local left = tonumber(ARGV[a + 5]) - tonumber(redis.call('HGET', KEYS[2], 'spent'))
    - tonumber(redis.call('HGET', KEYS[2], 'held') or '0')
  if left <= 0 or left < est then
    return {'budget', 0, tostring(left)}
  end
end
local undo = {}
for i = 1, n do
  local base = 1 + (i - 1) * 5
  local k = KEYS[4 + i]
  if redis.call('EXISTS', k) == 0 then
    redis.call('SET', k, ARGV[base + 4])
    if tonumber(ARGV[base + 3]) > 0 then redis.call('EXPIRE', k, ARGV[base + 3]) end
  end
  redis.call('INCRBY', k, ARGV[base + 1])
  if ARGV[base + 5] == '1' then undo[#undo + 1] = {k, '-' .. ARGV[base + 1]} end
end
redis.call('HINCRBY', KEYS[1], 'held', ARGV[a + 1])
redis.call('HINCRBY', KEYS[2], 'held', ARGV[a + 1])
redis.call('SET', KEYS[4], cjson.encode({c = undo, u = KEYS[1], k = KEYS[2], h = '-' .. ARGV[a + 1]}))
redis.call('ZADD', KEYS[3], ARGV[a + 7], ARGV[a + 8])
return {'ok'}
"""

_FINISH = """
local existed = redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
local n = tonumber(ARGV[2])
if existed == 1 then
  for i = 1, n do
    if redis.call('EXISTS', KEYS[6 + i]) == 1 then redis.call('INCRBY', KEYS[6 + i], ARGV[6 + i]) end
  end
  redis.call('HINCRBY', KEYS[1], 'held', ARGV[3])
  redis.call('HINCRBY', KEYS[2], 'held', ARGV[3])
else
  redis.call('HINCRBY', KEYS[1], 'held', ARGV[4])
  redis.call('HINCRBY', KEYS[2], 'held', ARGV[4])
end
if ARGV[4] ~= '0' then redis.call('HSET', KEYS[5], ARGV[1], ARGV[5]) end
redis.call('RPUSH', KEYS[6], ARGV[6])
return existed
"""

_RELEASE_EXPIRED = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 500)
for _, id in ipairs(ids) do
  local raw = redis.call('GET', ARGV[2] .. id)
  if raw then
    local undo = cjson.decode(raw)
    for _, item in ipairs(undo.c) do
      if redis.call('EXISTS', item[1]) == 1 then redis.call('INCRBY', item[1], item[2]) end
    end
    redis.call('HINCRBY', undo.u, 'held', undo.h)
    redis.call('HINCRBY', undo.k, 'held', undo.h)
    redis.call('DEL', ARGV[2] .. id)
  end
  redis.call('ZREM', KEYS[1], id)
end
return #ids
"""

_SETTLED = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local entry = redis.call('HGET', KEYS[1], ARGV[1 + i])
  if entry then
    redis.call('HDEL', KEYS[1], ARGV[1 + i])
    local user, key, cost = string.match(entry, '^([^:]*):([^:]*):(.*)$')
    redis.call('HINCRBY', ARGV[#ARGV - 1] .. user, 'held', '-' .. cost)
    if key ~= '' then redis.call('HINCRBY', ARGV[#ARGV] .. key, 'held', '-' .. cost) end
  end
end
local m = tonumber(ARGV[2 + n])
local base = 2 + n
for i = 1, m do
  local at = base + (i - 1) * 3
  local k, value, seq = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local field = string.sub(k, 1, string.len(ARGV[#ARGV - 1])) == ARGV[#ARGV - 1] and 'bal' or 'spent'
  local known = tonumber(redis.call('HGET', k, 'seq') or '-1')
  if tonumber(seq) >= known then
    redis.call('HSET', k, field, value, 'seq', seq)
  end
end
return n
"""


def _reserve_args(plan: Plan) -> tuple[list[str], list]:
    keys = [user_key(plan.user_id), apikey_key(plan.key_id), RESERVATIONS_KEY, reservation_key(plan.rid)]
    args: list = [len(plan.checks)]
    for check in plan.checks:
        keys.append(check.key)
        args += (check.amount, check.limit, check.ttl, check.init, 1 if check.settle in _UNDONE else 0)
    args += (
        plan.est_cost,
        plan.credit,
        plan.balance,
        plan.balance_seq,
        "" if plan.key_budget is None else plan.key_budget,
        plan.key_spent,
        plan.expires_at,
        plan.rid,
    )
    return keys, args


def _refusal(plan: Plan, result) -> Refusal | None:
    kind = result[0].decode() if isinstance(result[0], bytes) else result[0]
    if kind == "ok":
        return None
    value = int(float(result[2]))
    if kind == "limit":
        check = plan.checks[int(result[1]) - 1]
        return Refusal(check.kind, check.limit, max(check.limit - value, 0), check.reset_at, check)
    return Refusal(kind, plan.est_cost, max(value, 0), 0.0)


def _finish_args(plan: Plan, tokens: int, cost: int, event: bytes) -> tuple[list[str], list]:
    deltas = finish_deltas(plan, tokens, cost)
    keys = [
        user_key(plan.user_id),
        apikey_key(plan.key_id),
        reservation_key(plan.rid),
        RESERVATIONS_KEY,
        PENDING_KEY,
        USAGE_KEY,
    ] + [key for key, _ in deltas]
    args = [plan.rid, len(deltas), cost - plan.est_cost, cost, f"{plan.user_id}:{plan.key_id}:{cost}", event]
    args.extend(delta for _, delta in deltas)
    return keys, args


def _settled_args(settlement: Settlement) -> list:
    args: list = [len(settlement.charges)] + [rid for rid, *_ in settlement.charges]
    mirrors = [(user_key(uid), value, seq) for uid, (value, seq) in settlement.balances.items()]
    mirrors += [(apikey_key(kid), value, seq) for kid, (value, seq) in settlement.spent.items()]
    args.append(len(mirrors))
    for key, value, seq in mirrors:
        args.extend([key, value, seq])
    args.extend([PREFIX + "u:", PREFIX + "k:"])
    return args


class _AutoPipeline:
    """Sends the script calls of one event-loop tick in one write.

    Under load many requests reserve and finish at once; batching them turns N round
    trips (and N client-side command cycles) into one. Finishes are not urgent (the client
    already has its answer): they wait up to ``DEFER`` seconds to ride along with the next
    reservation, so a busy connection pays about one round trip per request, not two.
    While one batch is in flight the next accumulates (one outstanding batch per worker).
    Each script stays atomic on its own; the pipeline is not a transaction and needs none."""

    DEFER = 0.005

    def __init__(self, client: RespClient) -> None:
        self.client = client
        self.pending: list = []
        self.deferred: list = []
        self.flush_scheduled = False
        self.timer = None

    def call(self, script: Script, keys: list, args: list, *, urgent: bool = True) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if urgent:
            self.pending.append((future, script, keys, args))
            if not self.flush_scheduled:
                self.flush_scheduled = True
                loop.call_soon(self._flush)
        else:
            self.deferred.append((future, script, keys, args))
            if self.timer is None and not self.flush_scheduled:
                self.timer = loop.call_later(self.DEFER, self._flush)
        return future

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.pending and not self.deferred:
            return
        if self.client.ready and self.client.protocol.waiters:
            # a batch is on its way: collect until its replies are in, then send the lot
            # (under load this makes batches large and system calls few; idle, it costs
            # nothing, since an idle connection has nothing in flight)
            self.client.protocol.on_drain = self._flush
            return
        # finishes first: slots they free are available to the reservations behind them
        batch = self.deferred + self.pending if self.deferred else self.pending
        self.deferred, self.pending = [], []
        if self.client.ready:
            self.client.send(batch)
        else:
            asyncio.ensure_future(self._connect_and_send(batch))

    async def _connect_and_send(self, batch: list) -> None:
        try:
            await self.client.connect()
            self.client.send(batch)
        except Exception as exc:  # no connection: every caller gets the error
            for future, *_ in batch:
                if not future.done():
                    future.set_exception(exc)


class RedisCounterStore:
    remote = True

    def __init__(self, url: str) -> None:
        import redis
        import redis.asyncio as aioredis

        self.url = url
        # a bounded pool that makes callers wait for a connection instead of failing when
        # a burst of requests wants more connections than it holds
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=10)
        self.aio = aioredis.Redis(connection_pool=pool)
        self.sync = redis.Redis(
            connection_pool=redis.BlockingConnectionPool.from_url(url, max_connections=16)
        )
        self._reserve = Script(_RESERVE)
        self._finish = Script(_FINISH)
        self._release = self.sync.register_script(_RELEASE_EXPIRED)
        self._settled = self.sync.register_script(_SETTLED)
        self.pipeline = _AutoPipeline(RespClient(url))

    async def reserve(self, plan: Plan) -> Refusal | None:
        keys, args = _reserve_args(plan)
        return _refusal(plan, await self.pipeline.call(self._reserve, keys, args))

    def finish_nowait(self, plan: Plan, *, tokens: int, cost: int, event: dict) -> asyncio.Future:
        """Queue the finish; the future completes when Redis has applied it."""
        keys, args = _finish_args(plan, tokens, cost, orjson.dumps(event))
        return self.pipeline.call(self._finish, keys, args, urgent=False)

    async def count_auth_failure(self, ip: str) -> int:
        key = f"{PREFIX}authfail:{ip}:{int(time.time() // 60)}"
        pipe = self.aio.pipeline()
        pipe.incr(key)
        pipe.expire(key, 120)
        count, _ = await pipe.execute()
        return int(count)

    def settled(self, settlement: Settlement) -> None:
        self._settled(keys=[PENDING_KEY], args=_settled_args(settlement))

    def release_expired(self, now: float | None = None) -> int:
        return int(self._release(keys=[RESERVATIONS_KEY], args=[now or time.time(), PREFIX + "r:"]))

    def snapshot_user(self, user_id: int) -> dict:
        raw = self.sync.hgetall(user_key(user_id))
        return {k.decode(): int(v) for k, v in raw.items()}


# --- in process ----------------------------------------------------------------------------


class LocalCounterStore:
    """The same semantics in one process (the embedded default): plain dicts under a lock,
    shared by the relay's event loop and the settlement thread."""

    remote = False

    def __init__(self, on_event=None) -> None:
        self.lock = threading.Lock()
        self.counters: dict[str, list] = {}  # key -> [value, expires_at or 0]
        self.hashes: dict[str, dict[str, int]] = {}
        self.reservations: dict[str, Plan] = {}
        self.pending: dict[str, tuple[int, int | None, int]] = {}
        self.on_event = on_event  # where finished usage events go (the local usage queue)

    def clear(self) -> None:
        with self.lock:
            self.counters.clear()
            self.hashes.clear()
            self.reservations.clear()
            self.pending.clear()

    def _get(self, key: str, default: int, now: float) -> int:
        entry = self.counters.get(key)
        if entry is None or (entry[1] and entry[1] <= now):
            return default
        return entry[0]

    def _incr(self, key: str, delta: int, now: float, *, init: int = 0, ttl: int = 0) -> None:
        entry = self.counters.get(key)
        if entry is None or (entry[1] and entry[1] <= now):
            entry = self.counters[key] = [init, now + ttl if ttl else 0]
        entry[0] += delta

    def _incr_existing(self, key: str, delta: int, now: float) -> None:
        entry = self.counters.get(key)
        if entry is not None and not (entry[1] and entry[1] <= now):
            entry[0] += delta

    def reserve_sync(self, plan: Plan) -> Refusal | None:
        now = time.time()
        with self.lock:
            for check in plan.checks:
                current = self._get(check.key, check.init, now)
                if current + check.amount > check.limit:
                    return Refusal(
                        check.kind, check.limit, max(check.limit - current, 0), check.reset_at, check
                    )
            user = self.hashes.setdefault(user_key(plan.user_id), {})
            if "bal" not in user:
                user["bal"], user["seq"] = plan.balance, plan.balance_seq
            available = user["bal"] + plan.credit - user.get("held", 0)
            if available <= 0 or available < plan.est_cost:
                return Refusal("balance", plan.est_cost, max(available, 0), 0.0)
            key = self.hashes.setdefault(apikey_key(plan.key_id), {})
            if plan.key_budget is not None:
                if "spent" not in key:
                    key["spent"], key["seq"] = plan.key_spent, 0
                left = plan.key_budget - key["spent"] - key.get("held", 0)
                if left <= 0 or left < plan.est_cost:
                    return Refusal("budget", plan.est_cost, max(left, 0), 0.0)
            for check in plan.checks:
                self._incr(check.key, check.amount, now, init=check.init, ttl=check.ttl)
            user["held"] = user.get("held", 0) + plan.est_cost
            key["held"] = key.get("held", 0) + plan.est_cost
            self.reservations[plan.rid] = plan
        return None

    async def reserve(self, plan: Plan) -> Refusal | None:
        return self.reserve_sync(plan)

    def finish_sync(self, plan: Plan, *, tokens: int, cost: int, event: dict) -> None:
        now = time.time()
        with self.lock:
            existed = self.reservations.pop(plan.rid, None) is not None
            held_delta = cost - plan.est_cost if existed else cost
            if existed:
                for key, delta in finish_deltas(plan, tokens, cost):
                    self._incr_existing(key, delta, now)
            for name in (user_key(plan.user_id), apikey_key(plan.key_id)):
                bucket = self.hashes.setdefault(name, {})
                bucket["held"] = bucket.get("held", 0) + held_delta
            if cost:
                self.pending[plan.rid] = (plan.user_id, plan.key_id, cost)
        if self.on_event is not None:
            self.on_event(event)

    async def count_auth_failure(self, ip: str) -> int:
        now = time.time()
        key = f"authfail:{ip}:{int(now // 60)}"
        with self.lock:
            self._incr(key, 1, now, ttl=120)
            return self._get(key, 0, now)

    def settled(self, settlement: Settlement) -> None:
        with self.lock:
            for rid, *_ in settlement.charges:
                entry = self.pending.pop(rid, None)
                if entry is None:
                    continue
                user_id, key_id, cost = entry
                self.hashes.setdefault(user_key(user_id), {})["held"] = (
                    self.hashes[user_key(user_id)].get("held", 0) - cost
                )
                if key_id is not None:
                    bucket = self.hashes.setdefault(apikey_key(key_id), {})
                    bucket["held"] = bucket.get("held", 0) - cost
            for mirrors, prefix, field_name in (
                (settlement.balances, user_key, "bal"),
                (settlement.spent, apikey_key, "spent"),
            ):
                for owner, (value, seq) in mirrors.items():
                    bucket = self.hashes.setdefault(prefix(owner), {})
                    if seq >= bucket.get("seq", -1):
                        bucket[field_name], bucket["seq"] = value, seq

    def release_expired(self, now: float | None = None) -> int:
        now = now or time.time()
        released = 0
        with self.lock:
            for rid, plan in list(self.reservations.items()):
                if plan.expires_at > now:
                    continue
                for check in plan.checks:
                    if check.settle in _UNDONE:
                        self._incr_existing(check.key, -check.amount, now)
                for name in (user_key(plan.user_id), apikey_key(plan.key_id)):
                    bucket = self.hashes.setdefault(name, {})
                    bucket["held"] = bucket.get("held", 0) - plan.est_cost
                del self.reservations[rid]
                released += 1
            # forget expired windows so memory stays bounded
            for key in [k for k, (_, expires) in self.counters.items() if expires and expires <= now]:
                del self.counters[key]
        return released

    def snapshot_user(self, user_id: int) -> dict:
        with self.lock:
            return dict(self.hashes.get(user_key(user_id), {}))


_STORE = None
_STORE_LOCK = threading.Lock()


def get_store():
    """The process's store: Redis when REDIS_URL is set, else the in-process one."""
    global _STORE
    if _STORE is None:
        with _STORE_LOCK:
            if _STORE is None:
                _STORE = RedisCounterStore(settings.REDIS_URL) if settings.REDIS_URL else LocalCounterStore()
    return _STORE


def reset_store() -> None:
    """Tests: forget the in-process state (a Redis store is flushed by the tests). The
    store object stays, since the running relay holds it."""
    if isinstance(_STORE, LocalCounterStore):
        _STORE.clear()
