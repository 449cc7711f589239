#!/usr/bin/env python
"""Micro-benchmark: the relay's Redis calls through quotas/resp.py against redis-py.

Each caller makes the calls of one per-request reservation, the way the counter store
makes them when a lease is one request: the reserve script, then the flush script that
finishes it (its usage event, pending charge and closing lease), both by EVALSHA with
the real scripts of quotas/counters.py and arguments built by its own helpers (six
counters: key RPM, TPM and concurrency, user RPM, a request quota, a cost quota).

Clients (all on uvloop, as the gateway's workers run):

* ``resp``        - quotas/resp.py under the store's own auto-pipeline (``_AutoPipeline``);
* ``redispy``     - redis-py's asyncio client, one ``evalsha`` per call (connection pool,
                    hiredis parser);
* ``redispy-pipe``- redis-py's asyncio ``pipeline(transaction=False)``, batched the way the
                    auto-pipeline batches: the calls of one event-loop tick in one
                    ``execute``, one batch in flight, the next collected meanwhile;
* ``redispy-conn``- the same batching on redis-py's lowest public layer: one
                    ``Connection``, ``send_packed_command`` of the packed batch, then
                    ``read_response`` per reply (what a thin redis-py port would do).

At 1 and 32 concurrent callers; every (client, concurrency) measured ``--repeat`` times,
interleaved, against a redis-server on a free port started here. Printed per cell:
median and min-max of the client process's CPU time (``time.process_time``) per command,
wall time per command, and Redis's own CPU per command (INFO cpu).

    .venv/bin/python bench/redis_client.py [--repeat 5] [--calls 1500]

``--gateway`` measures instead what the relay asks of Redis at the benchmark's load: the
gateway started as bench/run.py starts it (2 workers, Redis, every limit on), one warm-up,
then ``wrk -t2 -c32 -d5s -s bench/post.lua``; Redis's INFO commandstats and
total_commands_processed before and after, and the workers' CPU (/proc), per request.
``--concurrency-limit N`` sets the key's concurrency limit (below 32 times a request's
use, a lease is one request: the per-request path).

    .venv/bin/python bench/redis_client.py --gateway [--concurrency-limit 40]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
os.environ.setdefault("SECRET_KEY", "bench")

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
import uvloop  # noqa: E402
from redis.exceptions import ResponseError  # noqa: E402

from bench import run, streams  # noqa: E402
from quotas import counters  # noqa: E402
from quotas.resp import RespClient, Script  # noqa: E402

CLIENTS = ("resp", "redispy", "redispy-pipe", "redispy-conn")
CONCURRENCY = (1, 32)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plan(user_id: int = 1, key_id: int = 1) -> counters.Plan:
    minute = int(time.time() // 60)
    rid = uuid.uuid4().hex
    end = (minute + 1) * 60.0
    checks = [
        counters.Check("rpm", f"gw:rpm:k:{key_id}:{minute}", 1, 10**7, 120, 0, end, "keep"),
        counters.Check("user_rpm", f"gw:rpm:u:{user_id}:{minute}", 1, 10**7, 120, 0, end, "keep"),
        counters.Check("tpm", f"gw:tpm:k:{key_id}:{minute}", 40, 2 * 10**9, 120, 0, end, "tokens"),
        counters.Check("quota", f"gw:q:1:{minute}", 1, 10**9, 86400, 0, end, "keep", quota_id=1),
        counters.Check("quota", f"gw:q:2:{minute}", 30_000, 10**15, 86400, 0, end, "cost", quota_id=2),
        counters.Check("concurrency", f"gw:conc:k:{key_id}", 1, 100_000, 0, 0, end, "release"),
    ]
    return counters.Plan(
        rid=rid,
        user_id=user_id,
        key_id=key_id,
        checks=checks,
        est_tokens=40,
        est_cost=30_000,
        credit=0,
        balance=10**15,
        balance_seq=1,
        key_budget=None,
        key_spent=0,
        expires_at=time.time() + 300,
    )


EVENT = orjson.dumps(
    {
        "request_id": "x" * 32,
        "ts": time.time(),
        "user_id": 1,
        "key_id": 1,
        "provider_id": 1,
        "price_id": 1,
        "request_type": "chat",
        "endpoint": "/v1/chat/completions",
        "model_requested": "gpt-4o-mini",
        "model_upstream": "gpt-4o-mini",
        "model_billed": "gpt-4o-mini",
        "providers_tried": [1],
        "stream": False,
        "prompt_tokens": 9,
        "completion_tokens": 4,
        "cached_tokens": 0,
        "usage_estimated": False,
        "cost": 21_000,
        "status_code": 200,
        "error": "",
        "latency_ms": 2,
        "ttft_ms": None,
        "client_ip": "127.0.0.1",
        "request_bytes": 74,
        "response_bytes": 260,
        "client_disconnected": False,
        "quotas": [[1, 0, "keep"], [2, 0, "cost"]],
        "breakdown": {},
    }
)


def call_pair() -> tuple[tuple[list, list], tuple[list, list]]:
    """(keys, args) of one reservation's reserve call and of the flush that finishes it."""
    p = plan()
    reserve = counters._reserve_args(p, 1, "w" * 32)
    lease = counters.Lease(p, 1, "w" * 32)
    lease.take(p)
    lease.give_back(p, 13, 21_000)
    lease.closing = True
    args = [1, EVENT, 1, p.rid, f"{p.user_id}:{p.key_id}:21000", 1, *lease.sync_args(time.time() + 300)]
    keys = [counters.USAGE_KEY, counters.PENDING_KEY, counters.RESERVATIONS_KEY, "gw:u:", "gw:k:"]
    return reserve, (keys, args)


class RedisPyAutoPipeline:
    """The auto-pipeline's batching over redis-py's pipeline: the calls of one tick in one
    ``execute``; while a batch is in flight the next accumulates."""

    def __init__(self, client: aioredis.Redis, connection=None) -> None:
        self.client = client
        self.connection = connection  # a redis-py Connection: send and read on it directly
        self.pending: list = []
        self.scheduled = False
        self.busy = False

    def call(self, script: Script, keys: list, args: list) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((future, script, keys, args))
        if not self.scheduled and not self.busy:
            self.scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self.scheduled = False
        if self.busy or not self.pending:
            return
        batch, self.pending = self.pending, []
        self.busy = True
        asyncio.ensure_future(self._send(batch))

    async def _send(self, batch: list) -> None:
        try:
            if self.connection is not None:
                replies = await self._send_raw(batch)
            else:
                pipe = self.client.pipeline(transaction=False)
                for _, script, keys, args in batch:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                replies = await pipe.execute(raise_on_error=False)
            for (future, *_), reply in zip(batch, replies, strict=True):
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except Exception as exc:
            for future, *_ in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self.busy = False
            if self.pending:
                self._flush()

    async def _send_raw(self, batch: list) -> list:
        connection = self.connection
        commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for _, script, keys, args in batch]
        await connection.send_packed_command(connection.pack_commands(commands), check_health=False)
        replies = []
        for _ in batch:
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies


async def measure(url: str, client: str, concurrency: int, calls: int, admin: aioredis.Redis) -> dict:
    reserve = Script(counters._RESERVE)
    sync = Script(counters._SYNC)
    work = [call_pair() for _ in range(calls)]
    per_caller = [work[i::concurrency] for i in range(concurrency)]
    closers = []
    if client == "resp":
        pipeline = counters._AutoPipeline(RespClient(url, scripts=(reserve, sync)), list)
        await pipeline.client.connect()
        closers.append(pipeline.client.close)

        async def evalsha(script, keys, args):
            return await pipeline.call(script, keys, args)

    else:
        r = aioredis.Redis.from_url(url)
        for script in (reserve, sync):
            await r.script_load(script.source)
        closers.append(r.aclose)
        if client == "redispy":

            async def evalsha(script, keys, args):
                return await r.evalsha(script.sha, len(keys), *keys, *args)

        elif client == "redispy-pipe":
            auto = RedisPyAutoPipeline(r)

            async def evalsha(script, keys, args):
                return await auto.call(script, keys, args)

        else:
            connection = await r.connection_pool.get_connection()
            auto = RedisPyAutoPipeline(r, connection)

            async def evalsha(script, keys, args):
                return await auto.call(script, keys, args)

    async def caller(items) -> None:
        for (rkeys, rargs), (skeys, sargs) in items:
            result = await evalsha(reserve, rkeys, rargs)
            assert result[0] == b"ok", result
            await evalsha(sync, skeys, sargs)

    # warm up: connections (32 of them for redis-py at 32 callers), caches
    await asyncio.gather(*(caller([call_pair()]) for _ in range(concurrency)))
    redis_before = await admin.info("cpu")
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(items) for items in per_caller))
    cpu1, wall1 = time.process_time(), time.perf_counter()
    redis_after = await admin.info("cpu")
    for close in closers:
        result = close()
        if asyncio.iscoroutine(result):
            await result
    await admin.delete(counters.USAGE_KEY, counters.PENDING_KEY)
    commands = 2 * calls
    redis_cpu = sum(redis_after[k] - redis_before[k] for k in ("used_cpu_user", "used_cpu_sys"))
    return {
        "cpu_us": (cpu1 - cpu0) / commands * 1e6,
        "wall_us": (wall1 - wall0) / commands * 1e6,
        "redis_us": redis_cpu / commands * 1e6,
    }


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):6.1f}-{max(values):6.1f})"


async def main(args) -> None:
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="bench-redis-")
    server = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        admin = aioredis.Redis.from_url(url)
        for _ in range(100):
            try:
                await admin.ping()
                break
            except Exception:
                await asyncio.sleep(0.05)
        results: dict = {}
        for rep in range(args.repeat):
            for concurrency in CONCURRENCY:
                order = CLIENTS if rep % 2 == 0 else tuple(reversed(CLIENTS))
                for client in order:
                    calls = args.calls * (4 if concurrency > 1 else 1)
                    row = await measure(url, client, concurrency, calls, admin)
                    results.setdefault((client, concurrency), []).append(row)
            print(f"round {rep + 1}/{args.repeat} done", file=sys.stderr, flush=True)
        await admin.aclose()
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    columns = ("client CPU us/cmd", "wall us/cmd", "redis CPU us/cmd")
    print(f"{'client':<13} {'callers':>7}" + "".join(f"  {column:>24}" for column in columns))
    for concurrency in CONCURRENCY:
        for client in CLIENTS:
            rows = results[(client, concurrency)]
            print(
                f"{client:<13} {concurrency:>7}  {spread([r['cpu_us'] for r in rows]):>24}  "
                f"{spread([r['wall_us'] for r in rows]):>24}  {spread([r['redis_us'] for r in rows]):>24}"
            )


def worker_cpu(master: int) -> float:
    """CPU seconds (user + system) of the gateway's worker processes so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in streams.child_pids(master):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def gateway(args) -> None:
    import redis

    procs = run.Procs()
    tmp = Path(tempfile.mkdtemp(prefix="bench-redis-gw-"))
    try:
        tools = run.ensure_tools({"nginx": "nginx", "wrk": "wrk"})
        upstream = run.start_nginx(procs, tmp, str(tools["nginx"]))
        redis_url = run.start_redis(procs, tmp)
        if args.concurrency_limit:
            run.LIMITS_SNIPPET = run.LIMITS_SNIPPET.replace(
                "100_000\nkey.save()", f"{args.concurrency_limit}\nkey.save()"
            )
            assert str(args.concurrency_limit) in run.LIMITS_SNIPPET
        code = Path(args.code).resolve() if args.code else run.REPO_ROOT
        target = run.start_gateway(procs, tmp, upstream + "/v1", redis_url + "/0", 2, code=code)
        run.precheck(target)
        run.run_wrk(str(tools["wrk"]), target, 32, 2, run.WARMUP_SECONDS)
        admin = redis.Redis.from_url(redis_url)

        def snapshot():
            stats = admin.info("commandstats")
            total = admin.info("stats")["total_commands_processed"]
            return stats, total, worker_cpu(target.master_pid)

        stats0, total0, cpu0 = snapshot()
        result = run.run_wrk(
            str(tools["wrk"]), target, args.connections, min(2, args.connections), args.duration
        )
        stats1, total1, cpu1 = snapshot()
        requests, values = result.values["requests"], result.values
        print(
            f"wrk -c{args.connections} -d{args.duration}s: {requests:.0f} requests, "
            f"{values['rps']:.0f} req/s, p50 {values['p50_ms']:.3f} ms, {result.errors} errors; "
            f"worker CPU {(cpu1 - cpu0) / requests * 1e6:.0f} us/request"
        )
        total = total1 - total0 - 2  # the snapshots' own INFO calls are not the relay's
        print(f"total_commands_processed: {total} = {total / requests:.4f}/request")
        for name in sorted(set(stats1) | set(stats0)):
            calls = stats1.get(name, {}).get("calls", 0) - stats0.get(name, {}).get("calls", 0)
            if name == "cmdstat_info":
                calls -= 2
            if calls:
                usec = stats1[name]["usec"] - stats0.get(name, {}).get("usec", 0)
                each = usec / calls
                print(
                    f"  {name[8:]:<12} {calls:>8} calls  {calls / requests:.4f}/request  {each:6.1f} us each"
                )
        statuses: dict = {}
        for raw in admin.lrange(counters.USAGE_KEY, 0, -1):  # nothing settles them here
            event = orjson.loads(raw)
            status = (event["status_code"], event["error"][:80])
            statuses[status] = statuses.get(status, 0) + 1
        print("usage events by status:", sorted(statuses.items(), key=lambda item: -item[1])[:5])
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1500, help="reservations per run at 1 caller (x4 at 32)")
    parser.add_argument(
        "--gateway", action="store_true", help="Redis commands per request at the gateway's load"
    )
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--concurrency-limit", type=int, default=0)
    parser.add_argument("--code", help="run the gateway from this checkout (an A/B worktree)")
    options = parser.parse_args()
    if options.gateway:
        gateway(options)
    else:
        uvloop.run(main(options))
