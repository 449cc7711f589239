"""The counter store: rate limits, concurrency, quotas and budget reservations.

Every relay request goes through two steps here:

1. ``reserve``: one atomic step (a Lua script on Redis; a lock-protected function in
   process) that checks every limit of the request — key RPM/TPM/concurrency, user RPM,
   each active quota of the key and of the user, the user's balance plus credit limit
   and the key's own budget against the request's estimate — and, only if all pass,
   counts the request and reserves the estimate. There is no check-then-increment gap
   anywhere, so 200 concurrent requests against a 50-request quota give exactly 50.
2. ``finish``: turns the reservation into the actual use (tokens, cost), releases the
   concurrency slot and queues the usage event, again in one atomic step.

On Redis a busy key does not pay a round trip for each: a worker reserves a *lease* for
many requests at once and flushes finished requests in batches (see ``Lease``; measured
reasons in docs/decisions.md).

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
import functools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

import orjson
from django.conf import settings

from billing.events import UsageEvent

from .resp import RespClient, Script

logger = logging.getLogger(__name__)

PREFIX = "gw:"
USAGE_KEY = PREFIX + "usage"
PENDING_KEY = PREFIX + "pending"  # request id -> "user:key:cost", charges awaiting settlement
# Each worker's heartbeat: a key refreshed every WORKER_BEAT seconds that expires after
# WORKER_TTL; its leases name it, and the reaper frees the leases of a worker whose key is
# gone (killed) instead of waiting for their RELAY_RESERVATION_TTL.
WORKER_PREFIX = PREFIX + "w:"
WORKER_TTL = 10
WORKER_BEAT = 2.0
RECONCILE_RETRY = 1.0  # seconds between attempts to give back failed leases (doubling, to 30)
RESERVATIONS_KEY = PREFIX + "resv"  # sorted set: request id scored by expiry time
# Checkpoints of a lease's open streams: hash gw:ck:<lease id>, request id -> "<pending
# charge>|<counter> <use> ...|<usage event JSON>" as if the stream were cut now (its token
# and cost counters' use, so the reaper counts it there too). The worker rewrites them every
# RELAY_CHECKPOINT_MS and deletes a stream's entry in the flush that carries its own event;
# the reaper turns what a dead worker's lease still has into usage events and charges.
CHECKPOINT_PREFIX = PREFIX + "ck:"


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
    source: object = None  # what the limits came from (the relay's KeyInfo): a lease serves one source
    lease: object = None  # the Redis store's Lease this request took its reservation from
    quotas: tuple = ()  # [quota id, period start, settle] of each quota it counts in (the event's)
    prompt_tokens: int = 0  # what the estimate is made of: prompt tokens,
    completion_tokens: int = 0  # completion tokens per choice (the limit the upstream gets)
    choices: int = 1  # and choices


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
_COUNTED = frozenset({"tokens", "cost"})  # what a stream's checkpoint counts of its use


def actual_use(check: Check, tokens: int, cost: int) -> int:
    """What a finished request really used of ``check``'s counter."""
    settle = check.settle
    if settle == "keep":  # a request counts once, as reserved
        return check.amount
    if settle == "tokens":
        return tokens
    if settle == "cost":
        return cost
    return 0  # "release": a concurrency slot, free again


def finish_deltas(plan: Plan, tokens: int, cost: int) -> list[tuple[str, int]]:
    """(counter, actual use minus reservation) of each counter the finish must correct."""
    deltas = []
    for check in plan.checks:
        delta = actual_use(check, tokens, cost) - check.amount
        if delta:
            deltas.append((check.key, delta))
    return deltas


# --- Redis ---------------------------------------------------------------------------------

_RESERVE = """
local n = tonumber(ARGV[1])
local a = 1 + n * 5
local k = tonumber(ARGV[a + 9])
local spread = tonumber(ARGV[a + 10])
for i = 1, n do
  local base = 1 + (i - 1) * 5
  local cur = tonumber(redis.call('GET', KEYS[4 + i]) or ARGV[base + 4])
  local amount, limit = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  if cur + amount > limit then
    return {'limit', i, tostring(cur)}
  end
  if amount > 0 then k = math.min(k, math.floor((limit - cur) / (amount * spread))) end
end
local est, credit = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
if redis.call('HSETNX', KEYS[1], 'bal', ARGV[a + 3]) == 1 then
  redis.call('HSET', KEYS[1], 'seq', ARGV[a + 4])
end
local avail = tonumber(redis.call('HGET', KEYS[1], 'bal')) + credit
  - tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
if avail <= 0 or avail < est then
  return {'balance', 0, tostring(avail)}
end
if est > 0 then k = math.min(k, math.floor(avail / (est * spread))) end
if ARGV[a + 5] ~= '' then
  if redis.call('HSETNX', KEYS[2], 'spent', ARGV[a + 6]) == 1 then
    redis.call('HSET', KEYS[2], 'seq', '0')
  end
  local left = tonumber(ARGV[a + 5]) - tonumber(redis.call('HGET', KEYS[2], 'spent'))
    - tonumber(redis.call('HGET', KEYS[2], 'held') or '0')
  if left <= 0 or left < est then
    return {'budget', 0, tostring(left)}
  end
  if est > 0 then k = math.min(k, math.floor(left / (est * spread))) end
end
if k < 1 then k = 1 end
local undo = {}
for i = 1, n do
  local base = 1 + (i - 1) * 5
  local key = KEYS[4 + i]
  local take = string.format('%d', k * tonumber(ARGV[base + 1]))
  if redis.call('EXISTS', key) == 0 then
    redis.call('SET', key, ARGV[base + 4])
    if tonumber(ARGV[base + 3]) > 0 then redis.call('EXPIRE', key, ARGV[base + 3]) end
  end
  redis.call('INCRBY', key, take)
  if ARGV[base + 5] == '1' then undo[#undo + 1] = {key, take == '0' and '0' or '-' .. take} end
end
local held = string.format('%d', k * est)
redis.call('HINCRBY', KEYS[1], 'held', held)
redis.call('HINCRBY', KEYS[2], 'held', held)
local back = held == '0' and '0' or '-' .. held
redis.call('SET', KEYS[4], cjson.encode({c = undo, u = KEYS[1], k = KEYS[2], h = back, w = ARGV[a + 11]}))
-- the worker the record names is alive in the same step (its heartbeat keeps it so)
if ARGV[a + 11] ~= '' then redis.call('SET', ARGV[a + 12] .. ARGV[a + 11], '1', 'EX', ARGV[a + 13]) end
redis.call('ZADD', KEYS[3], ARGV[a + 7], ARGV[a + 8])
return {'ok', k}
"""

# One call per flush: the usage events and pending charges of finished requests, and the
# state of every lease that changed. ARGV: number of events, the events; number of
# pending charges, (request id, "user:key:cost") pairs; number of leases, then per lease:
# record key, lease id, "u" (update) or "c" (close), the record's new JSON, expiry, user
# hash, key hash, money consumed since the last flush, the (signed) change of held money
# (what the lease gives back now), number of counters, then per counter: its key, use since
# the last flush, the (signed) change it gives back now.
_SYNC = """
local at = 1
local n = tonumber(ARGV[at])
for i = at + 1, at + n, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, at + n)))
end
at = at + n + 1
n = tonumber(ARGV[at])
for i = at + 1, at + 2 * n, 2 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 0 then
    -- the reaper billed this request from its checkpoint (its worker was presumed dead):
    -- that charge stands, and the hold its late finish adds below is taken back here
    local user, key, cost = string.match(ARGV[i + 1], '^([^:]*):([^:]*):(.*)$')
    redis.call('HINCRBY', KEYS[4] .. user, 'held', '-' .. cost)
    if key ~= '' then redis.call('HINCRBY', KEYS[5] .. key, 'held', '-' .. cost) end
  end
end
at = at + 2 * n + 1
local leases = tonumber(ARGV[at])
local gone = {}
at = at + 1
for _ = 1, leases do
  local rec, lid, mode, record, expires = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local ukey, kkey, used, back = ARGV[at + 5], ARGV[at + 6], ARGV[at + 7], ARGV[at + 8]  -- back: signed
  local m = tonumber(ARGV[at + 9])
  local first = at + 10
  at = first + 3 * m
  if redis.call('EXISTS', rec) == 1 then
    for i = 0, m - 1 do
      local key, give = ARGV[first + 3 * i], ARGV[first + 3 * i + 2]
      if give ~= '0' and redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, give) end
    end
    if back ~= '0' then
      redis.call('HINCRBY', ukey, 'held', back)
      redis.call('HINCRBY', kkey, 'held', back)
    end
    if mode == 'c' then
      redis.call('DEL', rec)
      redis.call('ZREM', KEYS[3], lid)
    else
      redis.call('SET', rec, record)
      redis.call('ZADD', KEYS[3], expires, lid)
    end
  else
    -- released already (its worker was presumed dead): what was used since the last
    -- flush was taken back with the rest, so count it again, as a late finish; the
    -- worker stops handing it out
    gone[#gone + 1] = lid
    for i = 0, m - 1 do
      local key, use = ARGV[first + 3 * i], ARGV[first + 3 * i + 1]
      if use ~= '0' and redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, use) end
    end
    if used ~= '0' then
      redis.call('HINCRBY', ukey, 'held', used)
      redis.call('HINCRBY', kkey, 'held', used)
    end
  end
end
return gone
"""

# The checkpoints of a worker's open streams, sent in the same batch as (and before) the
# flush carrying finished requests: ARGV: checkpoint prefix, expiry (s), number of finished
# streams, (lease id, request id) pairs whose checkpoints go; number of checkpoints, then
# (lease record key, lease id, request id, "<charge>|<uses>|<event>") each, written only while the
# lease's record exists (a released lease's streams are no longer the reaper's business).
_CHECKPOINT = """
local prefix, ttl = ARGV[1], ARGV[2]
local n = tonumber(ARGV[3])
local at = 4
for _ = 1, n do
  redis.call('HDEL', prefix .. ARGV[at], ARGV[at + 1])
  at = at + 2
end
n = tonumber(ARGV[at])
at = at + 1
for _ = 1, n do
  if redis.call('EXISTS', ARGV[at]) == 1 then
    local key = prefix .. ARGV[at + 1]
    redis.call('HSET', key, ARGV[at + 2], ARGV[at + 3])
    redis.call('EXPIRE', key, ttl)
  end
  at = at + 4
end
return n
"""

# Giving back one reservation: its record says what to undo on each counter and how much
# money it holds; the record and its entry in the set of reservations go.
_RELEASE_ONE = """
local function release(prefix, id, ck, usage, pending)
  local raw = redis.call('GET', prefix .. id)
  if raw then
    local undo = cjson.decode(raw)
    for _, item in ipairs(undo.c) do
      if redis.call('EXISTS', item[1]) == 1 then redis.call('INCRBY', item[1], item[2]) end
    end
    local back = tonumber(undo.h)
    if usage then
      -- streams in flight on a dead worker: billed from their last checkpoint; each
      -- charge stays held, as a pending charge, until settlement moves it to the balance
      local saved = redis.call('HGETALL', ck .. id)
      for i = 1, #saved, 2 do
        local value = saved[i + 1]
        local sep = string.find(value, '|', 1, true)
        local sep2 = string.find(value, '|', sep + 1, true)
        local charge = string.sub(value, 1, sep - 1)
        for counter, use in string.gmatch(string.sub(value, sep + 1, sep2 - 1), '(%S+) (%S+)') do
          if redis.call('EXISTS', counter) == 1 then redis.call('INCRBY', counter, use) end
        end
        redis.call('RPUSH', usage, string.sub(value, sep2 + 1))
        local cost = tonumber(string.match(charge, ':(%d+)$') or '0')
        if cost > 0 and redis.call('HSETNX', pending, saved[i], charge) == 1 then back = back + cost end
      end
    end
    local held = string.format('%d', back)
    redis.call('HINCRBY', undo.u, 'held', held)
    redis.call('HINCRBY', undo.k, 'held', held)
    redis.call('DEL', prefix .. id)
  end
  redis.call('DEL', ck .. id)
  redis.call('ZREM', KEYS[1], id)
  return raw and 1 or 0
end
"""

# The reaper: reservations past their expiry, and those of workers whose heartbeat expired
# (killed): within seconds, not the TTL.
_RELEASE_EXPIRED = (
    _RELEASE_ONE
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 500)
for _, id in ipairs(ids) do release(ARGV[2], id, ARGV[4], ARGV[5], ARGV[6]) end
local count = #ids
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, 1999)) do
  local raw = redis.call('GET', ARGV[2] .. id)
  if raw then
    local record = cjson.decode(raw)
    if record.w and record.w ~= '' and redis.call('EXISTS', ARGV[3] .. record.w) == 0 then
      count = count + release(ARGV[2], id, ARGV[4], ARGV[5], ARGV[6])
    end
  end
end
return count
"""
)

# The named reservations only: leases whose flush failed (Redis was unreachable), given
# back as soon as Redis answers again rather than when they expire. Their worker lives: its
# streams' own usage events went to its fallback queue, so their checkpoints just go.
_RELEASE_IDS = (
    _RELEASE_ONE
    + """
local released = 0
for i = 3, #ARGV do released = released + release(ARGV[1], ARGV[i], ARGV[2]) end
return released
"""
)

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


LEASE_SPREAD = 32  # a lease takes at most 1/32 of any limit's headroom (see Lease)
LEASE_IDLE = 1.0  # seconds an unused lease stays open before it is given back
CHECKPOINTS_PER_SECOND = 1000  # a worker's stream checkpoints a second, at most (see _checkpoints)
SWEEP_INTERVAL = 0.25


def _reserve_args(plan: Plan, size: int, worker: str = "") -> tuple[list[str], list]:
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
        size,
        LEASE_SPREAD,
        worker,
        WORKER_PREFIX,
        WORKER_TTL,
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


def _settled_args(settlement: Settlement) -> list:
    args: list = [len(settlement.charges)] + [rid for rid, *_ in settlement.charges]
    mirrors = [(user_key(uid), value, seq) for uid, (value, seq) in settlement.balances.items()]
    mirrors += [(apikey_key(kid), value, seq) for kid, (value, seq) in settlement.spent.items()]
    args.append(len(mirrors))
    for key, value, seq in mirrors:
        args.extend([key, value, seq])
    args.extend([PREFIX + "u:", PREFIX + "k:"])
    return args


class Lease:
    """Capacity one worker reserved in Redis, in one atomic step, for the next requests of
    one API key: ``k`` times the first request's amount on every counter and ``k`` times
    its cost estimate of the user's money and the key's budget. Requests that fit take
    their reservation from it in process, and give back the unused part when they finish;
    Redis hears about them in the next flush (usage events, pending charges and the
    lease's remaining reservation, one script call for the whole batch).

    The counters in Redis count the whole lease at once, so no limit is ever exceeded; an
    unused part only makes other workers see less headroom until it is given back (when
    the lease no longer fits a request, after ``LEASE_IDLE`` seconds unused, or at
    shutdown). Redis grants at most 1/``LEASE_SPREAD`` of any limit's headroom, so a lease
    shrinks to one request (the plain per-request reservation) near a limit: a 50-request
    quota gives exactly 50 successes. The Redis record of a lease always holds what is
    still reserved, so if the worker dies the reaper takes back exactly that.

    Per counter: ``granted`` is what Redis counts for the lease and is not used yet (it
    drops by the actual use of each finished request); ``avail`` is what new requests may
    take (``granted`` minus what requests in flight reserved)."""

    __slots__ = (
        "lid", "user_id", "key_id", "ukey", "kkey", "source", "settle", "granted", "avail",
        "used", "money_granted", "money", "money_used", "inflight", "single", "retired",
        "closing", "lost", "last_used", "fresh_until", "worker",
    )  # fmt: skip

    def __init__(self, plan: Plan, k: int, worker: str = "") -> None:
        self.worker = worker  # its heartbeat key names it: the reaper frees a dead worker's leases
        self.lid = plan.rid
        self.user_id, self.key_id = plan.user_id, plan.key_id
        self.ukey, self.kkey = user_key(plan.user_id), apikey_key(plan.key_id)
        self.source = plan.source
        self.settle = {check.key: check.settle for check in plan.checks}
        self.granted = {check.key: k * check.amount for check in plan.checks}
        self.avail = dict(self.granted)
        self.used = dict.fromkeys(self.granted, 0)  # use of undoable counters since the last flush
        self.money_granted = self.money = k * plan.est_cost
        self.money_used = 0  # charges since the last flush
        self.inflight = 0
        self.single = k == 1  # a plain reservation: closed when its request finishes
        self.retired = self.closing = self.lost = False
        self.last_used = time.monotonic()
        # new requests take from it only while its Redis record is surely not expired: the
        # reaper releases a record TTL after its last renewal; each flush renews it
        self.fresh_until = self.last_used + (plan.expires_at - time.time()) / 2

    def take(self, plan: Plan) -> bool:
        if self.retired or plan.source is not self.source or self.money < plan.est_cost:
            return False
        if time.monotonic() > self.fresh_until:
            return False
        avail = self.avail
        for check in plan.checks:
            left = avail.get(check.key)
            if left is None or left < check.amount:
                return False
        for check in plan.checks:
            avail[check.key] -= check.amount
        self.money -= plan.est_cost
        self.inflight += 1
        return True

    def give_back(self, plan: Plan, tokens: int, cost: int) -> None:
        granted, avail, used = self.granted, self.avail, self.used
        for check in plan.checks:
            use = actual_use(check, tokens, cost)
            granted[check.key] -= use
            avail[check.key] += check.amount - use
            if use and check.settle != "keep":
                used[check.key] += use
        self.money_granted -= cost
        self.money += plan.est_cost - cost
        self.money_used += cost
        self.inflight -= 1
        self.last_used = time.monotonic()

    def record(self) -> bytes:
        """The Redis record: what the reaper takes back if this worker dies now."""
        undo = [[key, str(-granted)] for key, granted in self.granted.items() if self.settle[key] in _UNDONE]
        return orjson.dumps(
            {"c": undo, "u": self.ukey, "k": self.kkey, "h": str(-self.money_granted), "w": self.worker}
        )

    def sync_args(self, expires: float) -> list:
        """This lease's part of a flush: what it gives back now (everything when it
        closes; what no request in flight holds once it is retired, so a long stream does
        not keep the rest reserved) and what Redis should know of it; resets the use
        counted since the last flush."""
        close = self.closing
        if close:
            give, money_back = self.granted, self.money_granted
        elif self.retired:
            give = {key: left for key, left in self.avail.items() if left}
            money_back = self.money
            for key, left in give.items():
                self.granted[key] -= left
                self.avail[key] = 0
            self.money_granted -= money_back
            self.money = 0
        else:
            # use above the estimate (avail below zero) is reserved in Redis at once, so
            # other workers see it now rather than when this lease retires
            give = {key: left for key, left in self.avail.items() if left < 0}
            money_back = min(self.money, 0)
            for key, left in give.items():
                self.granted[key] -= left
                self.avail[key] = 0
            self.money_granted -= money_back
            self.money -= money_back
        args = [
            reservation_key(self.lid),
            self.lid,
            "c" if close else "u",
            b"" if close else self.record(),
            expires,
            self.ukey,
            self.kkey,
            self.money_used,
            -money_back,
        ]
        counters = [
            (key, self.used[key], -give.get(key, 0))
            for key in self.granted
            if self.used[key] or give.get(key)
        ]
        args.append(len(counters))
        for counter in counters:
            args.extend(counter)
        self.money_used = 0
        for key in self.used:
            self.used[key] = 0
        return args


class _AutoPipeline:
    """Sends the script calls of one event-loop tick in one write.

    Under load many requests reserve at once; batching them turns N round trips (and N
    client-side command cycles) into one. ``collect`` adds the store's flush (finished
    requests, changed leases) in front of each batch: finishes are not urgent (the client
    already has its answer), so ``poke`` waits up to ``DEFER`` seconds for them to ride
    along with a reservation. While one batch is in flight the next accumulates (one
    outstanding batch per worker). Each script stays atomic on its own; the pipeline is
    not a transaction and needs none."""

    DEFER = 0.02

    def __init__(self, client: RespClient, collect) -> None:
        self.client = client
        self.collect = collect
        self.pending: list = []
        self.flush_scheduled = False
        self.timer = None
        self.connecting: asyncio.Future | None = None

    def call(self, script: Script, keys: list, args: list) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((future, script, keys, args))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def poke(self, *, soon: bool = False) -> None:
        if self.flush_scheduled or (self.timer is not None and not soon):
            return  # a flush is coming anyway (the usual case under load: called per request)
        loop = asyncio.get_running_loop()
        if soon:
            self.flush_scheduled = True
            loop.call_soon(self._flush)
        else:
            self.timer = loop.call_later(self.DEFER, self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.client.ready and self.client.protocol.waiters:
            # a batch is on its way: collect until its replies are in, then send the lot
            # (under load this makes batches large and system calls few; idle, it costs
            # nothing, since an idle connection has nothing in flight)
            self.client.protocol.on_drain = self._flush
            return
        if not self.client.ready:
            # (re)connect first; batches wait for it, so they reach Redis in order
            if self.connecting is None:
                self.connecting = asyncio.ensure_future(self._connect())
            return
        # the flush first: leases it closes free capacity for the reservations behind it
        batch = self.collect()
        if self.pending:
            batch += self.pending
            self.pending = []
        if batch:
            self.client.send(batch)

    async def _connect(self) -> None:
        try:
            await self.client.connect()
        except BaseException as exc:  # no connection: every caller waiting gets the error
            batch = self.collect() + self.pending
            self.pending = []
            for future, *_ in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self.connecting = None
        if self.client.ready:
            self._flush()


def _checkpointed(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("writing stream checkpoints failed", extra={"error": repr(future.exception())[:300]})


class RedisCounterStore:
    """The counter store on Redis, shared by every worker. Each worker reserves for its
    requests through leases (see ``Lease``): a busy key costs Redis one script call per
    lease plus its share of one flush per batch, instead of two calls per request."""

    remote = True

    def __init__(self, url: str, *, lease_size: int | None = None) -> None:
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
        self._sync = Script(_SYNC)
        self._checkpoint = Script(_CHECKPOINT)
        self._release = self.sync.register_script(_RELEASE_EXPIRED)
        self._release_ids = self.aio.register_script(_RELEASE_IDS)
        self.orphans: set[str] = set()  # ids of leases whose flush failed, to give back
        self.worker = uuid.uuid4().hex
        self.beat: asyncio.Task | None = None
        self.reconciler: asyncio.Task | None = None
        self._settled = self.sync.register_script(_SETTLED)
        # loaded on every (re)connect, so a NOSCRIPT retry cannot reorder a batch
        self.pipeline = _AutoPipeline(
            RespClient(url, scripts=(self._reserve, self._sync, self._checkpoint)), self._collect
        )
        self.lease_size = settings.RELAY_LEASE_SIZE if lease_size is None else lease_size
        self.ttl = settings.RELAY_RESERVATION_TTL
        self.leases: dict[int, Lease] = {}  # key id -> the lease its new requests take from
        self.shared: dict[int, bool] = {}  # key id -> whether its last grant was for several requests
        self.granting: dict[int, asyncio.Future] = {}  # key id -> the lease being asked for
        # finished requests for the next flush: (lease, usage event, request id, pending charge)
        self.events: list[tuple[Lease, bytes, str, str | None]] = []
        self.dirty: dict[Lease, None] = {}  # leases whose state the next flush writes
        self.flushing: set[asyncio.Future] = set()
        self.on_lost = None  # takes usage events whose flush failed (the relay's usage queue)
        self.sweeper = None
        # open streams: request id -> (plan, a function giving its usage event if it were
        # cut now, the token count of its last checkpoint); their checkpoints are written
        # every RELAY_CHECKPOINT_MS and dropped with the finish that flushes their event
        self.streams: dict[str, list] = {}
        self.ended: list[str] = []  # lease id, request id, ... of finished streams' checkpoints
        self.checkpoint_due = False
        self.checkpointer: asyncio.Task | None = None

    # --- requests --------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(WORKER_BEAT)
            try:
                await self.aio.set(WORKER_PREFIX + self.worker, "1", ex=WORKER_TTL)
            except Exception:  # Redis unreachable: the next beat tries again
                logger.warning("worker heartbeat failed", exc_info=True)

    async def reserve(self, plan: Plan) -> Refusal | None:
        if self.beat is None or self.beat.done():
            # the reserve script marks this worker alive with the first record naming it;
            # the heartbeat keeps it so (no round trip on the request's path)
            self.beat = asyncio.get_running_loop().create_task(self._heartbeat())
        key_id = plan.key_id
        while True:
            lease = self.leases.get(key_id)
            if lease is not None:
                if lease.take(plan):
                    plan.lease = lease
                    return None
                self._retire(lease)
            granting = self.granting.get(key_id)
            if granting is None:
                break
            # one request asks for the key's next lease; the others wait for it (shielded:
            # a waiter that is cancelled must not cancel it for everyone)
            await asyncio.shield(granting)
        shared = self.shared.get(key_id, True)
        if shared:
            granting = self.granting[key_id] = asyncio.get_running_loop().create_future()
        failure = None
        try:
            keys, args = _reserve_args(plan, self.lease_size, self.worker)
            reply = self.pipeline.call(self._reserve, keys, args)
            try:
                result = await asyncio.shield(reply)
            except asyncio.CancelledError:
                # the request is gone, but Redis may grant the lease all the same: give it
                # back as soon as the answer is in, rather than when the reaper finds it
                reply.add_done_callback(functools.partial(self._abandoned, plan))
                raise
            except Exception as exc:
                failure = exc
                raise
        finally:
            if shared:
                del self.granting[key_id]
                if failure is None:
                    granting.set_result(None)
                else:  # Redis failed: the waiters fail with it now, not one timeout after another
                    granting.set_exception(failure)
                    granting.exception()  # (retrieved: no warning when nobody waited)
        refusal = _refusal(plan, result)
        if refusal is not None:
            # at a limit: the key's next requests ask Redis each, in one batch, rather than
            # one after another behind a grant that is not coming
            self.shared[key_id] = False
            return refusal
        lease = self._granted(plan, result)
        lease.take(plan)  # it was sized for this request: always fits
        plan.lease = lease
        return None

    def _granted(self, plan: Plan, result) -> Lease:
        key_id = plan.key_id
        lease = Lease(plan, int(result[1]), self.worker)
        self.shared[key_id] = not lease.single
        if not lease.single:
            old = self.leases.get(key_id)
            if old is not None:
                self._retire(old)
            self.leases[key_id] = lease
            self._sweep_later()
        return lease

    def _abandoned(self, plan: Plan, reply: asyncio.Future) -> None:
        if reply.cancelled() or reply.exception() is not None or _refusal(plan, reply.result()):
            return
        lease = Lease(plan, int(reply.result()[1]), self.worker)
        self._retire(lease)  # nothing was taken from it: it closes with the next flush

    def finish(self, plan: Plan, *, tokens: int, cost: int, event: UsageEvent) -> None:
        """Give back what the request did not use and queue its usage event (and pending
        charge) for the next flush, which follows within ``_AutoPipeline.DEFER``."""
        lease = plan.lease
        watched = self.streams.pop(plan.rid, None)
        if lease.lost:  # its flush failed: the reaper takes the lease back
            self._lost([event])
            return
        if watched is not None and watched[2] is not None:  # a checkpoint of it may be in Redis
            self.ended += (lease.lid, plan.rid)
        lease.give_back(plan, tokens, cost)
        charge = f"{plan.user_id}:{plan.key_id}:{cost}" if cost else None
        self.events.append((lease, orjson.dumps(event), plan.rid, charge))
        self.dirty[lease] = None
        if lease.inflight == 0 and (lease.single or lease.retired):
            lease.closing = True
        # a single reservation gives back what may be wanted at once (a concurrency slot of
        # a tight limit, by this very client's next request): flush now, not within DEFER
        self.pipeline.poke(soon=lease.closing and lease.single)

    def watch(self, plan: Plan, snapshot) -> None:
        """Checkpoint the open stream of ``plan`` until it finishes: ``snapshot()`` gives its
        usage event as if it were cut now (None while nothing was produced)."""
        self.streams[plan.rid] = [plan, snapshot, None]
        if self.checkpointer is None or self.checkpointer.done():
            self.checkpointer = asyncio.get_running_loop().create_task(self._checkpoints())

    async def _checkpoints(self) -> None:
        base = settings.RELAY_CHECKPOINT_MS / 1000
        while self.streams:
            # at most CHECKPOINTS_PER_SECOND streams a second: with thousands open, every
            # 250 ms took a third of the worker's CPU (each checkpoint is a usage event);
            # the interval grows with the count instead (5 s at 5,000 streams)
            await asyncio.sleep(max(base, len(self.streams) / CHECKPOINTS_PER_SECOND))
            self.checkpoint_due = True
            self.pipeline.poke(soon=True)

    def _checkpoint_args(self) -> list | None:
        """The checkpoint script's arguments: finished streams' checkpoints to drop, and the
        open streams whose counts moved since their last checkpoint."""
        written: list = []
        if self.checkpoint_due:
            self.checkpoint_due = False
            for rid, entry in self.streams.items():
                plan, snapshot, last = entry
                if plan.lease is None or plan.lease.lost:
                    continue
                try:
                    event = snapshot()
                except Exception:  # a checkpoint must never break the flush
                    logger.exception("stream checkpoint failed")
                    continue
                if event is None or event.tokens == last:
                    continue
                entry[2] = event.tokens
                charge = f"{plan.user_id}:{plan.key_id}:{event.cost}" if event.cost else ""
                written += (reservation_key(plan.lease.lid), plan.lease.lid, rid)
                uses = " ".join(
                    f"{check.key} {actual_use(check, event.tokens, event.cost)}"
                    for check in plan.checks
                    if check.settle in _COUNTED
                )
                written.append(f"{charge}|{uses}|".encode() + orjson.dumps(event))
        if not (written or self.ended):
            return None
        ended, self.ended = self.ended, []
        return [CHECKPOINT_PREFIX, self.ttl, len(ended) // 2, *ended, len(written) // 4, *written]

    def _retire(self, lease: Lease) -> None:
        """No new request takes from ``lease``; it closes when its last request finishes."""
        if self.leases.get(lease.key_id) is lease:
            del self.leases[lease.key_id]
        if lease.closing or lease.lost:
            return
        again, lease.retired = lease.retired, True
        if lease.inflight == 0:
            lease.closing = True
        elif again:
            return  # it gave back what it could; its requests' finishes flush the rest
        self.dirty[lease] = None  # closes it, or gives back what its requests in flight do not hold
        self.pipeline.poke()

    def _sweep_later(self) -> None:
        if self.sweeper is None:
            self.sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        self.sweeper = None
        self.release_idle(LEASE_IDLE)
        if self.leases:
            self._sweep_later()

    def release_idle(self, idle: float = 0.0) -> None:
        """Give back the leases unused for ``idle`` seconds (all unused ones with 0). Call
        on the relay's event loop."""
        now = time.monotonic()
        for lease in list(self.leases.values()):
            if lease.inflight == 0 and now - lease.last_used >= idle:
                self._retire(lease)

    # --- the flush -------------------------------------------------------------------

    def _collect(self) -> list:
        batch = []
        checkpoints = self._checkpoint_args() if self.streams or self.ended else None
        if checkpoints is not None:
            # before the flush: a finished stream's checkpoint goes in the same write as its event
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_checkpointed)
            batch.append((future, self._checkpoint, [], checkpoints))
        if not (self.events or self.dirty):
            return batch
        finished, self.events = self.events, []
        events = [payload for _, payload, _, _ in finished]
        pending = [part for _, _, rid, charge in finished if charge for part in (rid, charge)]
        leases = list(self.dirty)
        self.dirty = {}
        args: list = [len(events), *events, len(pending) // 2, *pending, len(leases)]
        expires = time.time() + self.ttl
        fresh_until = time.monotonic() + self.ttl / 2  # once Redis confirms the renewal
        for lease in leases:
            args += lease.sync_args(expires)
        future = asyncio.get_running_loop().create_future()
        self.flushing.add(future)
        future.add_done_callback(functools.partial(self._flushed, events, leases, fresh_until))
        keys = [USAGE_KEY, PENDING_KEY, RESERVATIONS_KEY, PREFIX + "u:", PREFIX + "k:"]
        return [*batch, (future, self._sync, keys, args)]

    def _flushed(
        self, events: list[bytes], leases: list[Lease], fresh_until: float, future: asyncio.Future
    ) -> None:
        self.flushing.discard(future)
        if not future.cancelled() and future.exception() is None:
            gone = {lid.decode() for lid in future.result() or ()}
            for lease in leases:
                if lease.lid in gone:  # released by the reaper: Redis no longer counts its rest
                    self._retire(lease)
                else:
                    lease.fresh_until = max(lease.fresh_until, fresh_until)
            return
        # Redis may or may not have applied it: keep the usage (settlement skips request
        # ids it has) and stop using these leases; the reaper takes back what they hold
        logger.error(
            "flushing finished requests to Redis failed; their usage is queued directly",
            extra={
                "events": len(events),
                "error": "cancelled" if future.cancelled() else repr(future.exception())[:300],
            },
        )
        for lease in leases:
            lease.lost = True
            self.orphans.add(lease.lid)
            self.dirty.pop(lease, None)
            if self.leases.get(lease.key_id) is lease:
                del self.leases[lease.key_id]
        self._reconcile_soon()
        # requests of these leases that finished meanwhile must not reach Redis either: the
        # leases' records there may be stale, so their charges would not match them
        later = [entry for entry in self.events if entry[0].lost]
        if later:
            self.events = [entry for entry in self.events if not entry[0].lost]
            events = events + [payload for _, payload, _, _ in later]
        self._lost([orjson.loads(event) for event in events])  # settlement reads them back

    def _reconcile_soon(self) -> None:
        if self.orphans and (self.reconciler is None or self.reconciler.done()):
            self.reconciler = asyncio.get_running_loop().create_task(self._reconcile())

    async def _reconcile(self) -> None:
        """Give back, once Redis answers again, what the leases whose flush failed still
        hold there (their record is what they held at their last flush). Their finished
        requests' usage went to the fallback queue; a request still in flight on one of
        them no longer counts against concurrency for the rest of its run."""
        delay = RECONCILE_RETRY
        while self.orphans:
            ids = list(self.orphans)
            try:
                args = [PREFIX + "r:", CHECKPOINT_PREFIX, *ids]
                await self._release_ids(keys=[RESERVATIONS_KEY], args=args)
            except Exception:
                await asyncio.sleep(delay)  # still unreachable
                delay = min(delay * 2, 30.0)
                continue
            self.orphans.difference_update(ids)
            logger.warning(
                "gave back the reservations of leases whose flush had failed", extra={"leases": len(ids)}
            )

    def _lost(self, events: list[UsageEvent | dict]) -> None:
        if self.on_lost is None:
            logger.error("usage events lost: no fallback queue", extra={"events": len(events)})
            return
        for event in events:
            self.on_lost(event)

    def busy(self) -> bool:
        """Whether finished requests still wait to reach Redis."""
        return bool(self.events or self.dirty or self.flushing or self.ended)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Shutdown: give every lease back (what requests in flight hold follows with their
        finish) and wait for the last flush."""
        for lease in list(self.leases.values()):
            self._retire(lease)
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        if self.reconciler is not None and not self.reconciler.done():
            self.reconciler.cancel()  # what it did not give back, the reaper will
        if self.beat is not None:
            self.beat.cancel()
        if self.checkpointer is not None:
            self.checkpointer.cancel()
        if self.events or self.dirty or self.ended:
            self.pipeline.poke(soon=True)
        deadline = time.monotonic() + timeout
        while self.busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if self.busy():
            logger.error("shutdown: finished requests not flushed to Redis in time; the reaper releases")

    # --- the rest --------------------------------------------------------------------

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
        return int(
            self._release(
                keys=[RESERVATIONS_KEY],
                args=[
                    now or time.time(),
                    *(PREFIX + "r:", WORKER_PREFIX, CHECKPOINT_PREFIX, USAGE_KEY, PENDING_KEY),
                ],
            )
        )

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

    def finish_sync(self, plan: Plan, *, tokens: int, cost: int, event: UsageEvent) -> None:
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
