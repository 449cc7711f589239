"""Load generator of the streaming benchmark: one of the processes bench/streams.py starts.

    python bench/stream_client.py --url URL --count N --body JSON [--header "Name: value"]...
                                  --start-at EPOCH --timeout S --out FILE

At ``--start-at`` (wall clock, so that every client process starts at the same moment) it
opens ``--count`` concurrent streaming POSTs to ``--url``, reads each to its end, and
writes a JSON summary to ``--out``: how many streams ended with ``data: [DONE]``, every
stream's first-chunk latency (from its own request's start), the failures by reason, and
this process's CPU seconds against the wall time, over the run and over the opening burst
(until every stream had its first chunk): a share near 1.0 means the load generator, not
the server, set the pace.

One aiohttp event loop per process; the harness splits the streams over several processes
because one loop cannot read 10,000 streams x 2 chunks/s on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import aiohttp

DONE = b"data: [DONE]"


class Stats:
    def __init__(self) -> None:
        self.completed = 0
        self.first_chunk: list[float] = []
        self.failures: dict[str, int] = {}
        self.ramp: tuple[float, float] | None = None  # (wall, CPU) when the last first chunk came

    def first(self, latency: float, count: int) -> None:
        self.first_chunk.append(latency)
        if len(self.first_chunk) == count:
            self.ramp = (time.time(), time.process_time())

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1


async def one(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict, stats: Stats, count: int
) -> None:
    started = time.monotonic()
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            if resp.status != 200:
                stats.fail(f"HTTP {resp.status}: {(await resp.text())[:200]}")
                return
            tail = b""
            async for chunk in resp.content.iter_any():
                if not tail:
                    stats.first(time.monotonic() - started, count)
                # [DONE] is the last event: the stream's last bytes are enough to find it
                tail = (tail + chunk)[-32:]
            if DONE in tail:
                stats.completed += 1
            else:
                stats.fail("stream ended without [DONE]")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        stats.fail(f"{type(exc).__name__}: {exc}"[:200])


async def run(args: argparse.Namespace) -> dict:
    headers = {"Content-Type": "application/json"}
    for item in args.header:
        name, _, value = item.partition(":")
        headers[name.strip()] = value.strip()
    body = args.body.encode()
    stats = Stats()
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=args.timeout, sock_connect=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
        began = time.time()
        cpu0 = time.process_time()
        await asyncio.gather(
            *(one(session, args.url, body, headers, stats, args.count) for _ in range(args.count))
        )
        cpu = time.process_time() - cpu0
        ended = time.time()
    return {
        "count": args.count,
        "completed": stats.completed,
        "first_chunk_s": [round(value, 4) for value in stats.first_chunk],
        "failures": stats.failures,
        "late_s": round(began - args.start_at, 3),
        "ended_at": ended,
        "cpu_s": round(cpu, 2),
        "cpu_share": round(cpu / (ended - began), 3) if ended > began else None,
        # the opening burst: until every stream had its first chunk (a share near 1.0: the
        # load generator was busy opening streams and the first-chunk figures are its own)
        "ramp_s": round(stats.ramp[0] - began, 3) if stats.ramp else None,
        "ramp_cpu_share": (
            round((stats.ramp[1] - cpu0) / (stats.ramp[0] - began), 3)
            if stats.ramp and stats.ramp[0] > began
            else None
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--header", action="append", default=[], help='"Name: value" (repeatable)')
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock time to start at")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per stream")
    parser.add_argument("--out", required=True, help="where to write the JSON summary")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:
        summary = asyncio.run(run(args))
    else:
        summary = uvloop.run(run(args))
    with open(args.out, "w") as out:
        json.dump(summary, out)


if __name__ == "__main__":
    main()
