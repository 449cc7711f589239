#!/usr/bin/env python
"""What one open stream costs a server process: RSS and tracemalloc's allocation sites.

Starts the slow fake upstream (bench/slow_stream.py) and, for each target, ONE server
process with the bench's settings (bench/run.py's ``start_gateway`` with one gunicorn
worker, or ``start_passthrough`` with one uvicorn process). Then:

1. warm-up: ``--warmup`` streams read to the end (imports, caches, pools filled);
2. ``idle`` probe: a full collection, RSS, live objects by type, a tracemalloc snapshot;
3. ``--streams`` concurrent streaming chat completions opened and held; once every one has
   its first chunk (and ``--settle`` seconds more), the ``open`` probe;
4. after they all ended, the ``after`` probe (what a finished stream leaves behind).

Each target runs twice: without tracemalloc for RSS (tracing inflates it), then with
``--frames`` frames per allocation for the allocation sites of the ``open - idle`` diff,
grouped by traceback and by line (tracing from the ``idle`` probe on; that run's streams
are ``--trace-streams``, have ``--trace-chunks`` chunks and open over ``--trace-ramp``
seconds, as tracing slows the server many times). Figures are per stream still open at
the ``open`` probe. The probe is bench/memory_hook.py, installed as the server's
``sitecustomize`` (nothing in the project's code).

    .venv/bin/python bench/stream_memory.py [--only gateway,gateway-redis,passthrough]
        [--streams 1000] [--frames 12] [--no-trace] [--code DIR] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (  # noqa: E402
    BENCH_DIR,
    REPO_ROOT,
    REQUEST_BODY,
    BenchError,
    Procs,
    install_signal_handlers,
    log,
    precheck,
    raise_nofile_limit,
    start_gateway,
    start_passthrough,
    start_redis,
    start_slow_stream,
)
from bench.streams import child_pids  # noqa: E402

TARGETS = ("gateway", "gateway-redis", "passthrough")
# frames of the probe itself and of tracemalloc, left out of the diffs
PROBE_FILES = ("*/sitecustomize.py", tracemalloc.__file__)


# --------------------------------------------------------------------------
# the server and its probe


def start_target(procs: Procs, tmp: Path, name: str, upstream: str, redis: str | None, args, run: int):
    label = f"{name}-{run}"
    if name == "passthrough":
        return start_passthrough(procs, tmp, upstream, 1, name=label)
    return start_gateway(procs, tmp, upstream + "/v1", redis, 1, name=label, code=args.code)


def probe_port(directory: Path, master: int, timeout: float = 30.0) -> tuple[int, int]:
    """(pid, port) of the server process that answers requests: gunicorn's one worker, or
    uvicorn's one process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in child_pids(master) or [master]:
            path = directory / f"{pid}.port"
            if path.exists():
                return pid, int(path.read_text())
        time.sleep(0.1)
    raise BenchError(f"no memory probe answered under pid {master} (is bench/memory_hook.py installed?)")


def probe(port: int, name: str) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=300) as conn:
        conn.sendall(f"snap {name}\n".encode())
        reply = conn.makefile("rb").readline()
    if not reply:
        raise BenchError(f"the memory probe gave no answer to 'snap {name}' (did the server die?)")
    answer = json.loads(reply)
    if "error" in answer:
        raise BenchError(f"memory probe: {answer['error']}")
    return answer


# --------------------------------------------------------------------------
# the client


async def read_stream(
    session, url: str, headers: dict, first: asyncio.Event | None = None, delay: float = 0.0
) -> bool:
    """One streaming request (sent after ``delay`` seconds) read to its end: did it end
    with ``[DONE]``?"""
    import aiohttp

    body = dict(REQUEST_BODY, stream=True)
    await asyncio.sleep(delay)
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            if resp.status != 200:
                log(f"stream answered {resp.status}: {(await resp.text())[:200]}")
                return False
            done = False
            async for line in resp.content:
                if first is not None and not first.is_set():
                    first.set()
                done = done or line.strip() == b"data: [DONE]"
            return done
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        log(f"stream failed: {type(exc).__name__}: {exc}")
        return False
    finally:
        if first is not None:
            first.set()  # a failed stream is not waited for


async def measure(target, port: int, args, chunks: int, ramp: float, count: int) -> dict:
    import aiohttp

    headers = {"Authorization": target.auth} if target.auth else {}
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    lasting = chunks * args.interval  # how long a stream lasts
    timeout = aiohttp.ClientTimeout(total=lasting + 300, sock_connect=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        log(f"{target.name}: warm-up, {args.warmup} streams")
        # as long as the untraced run's streams last at most: a longer one is left early
        warm = (read_stream(session, target.url, headers) for _ in range(args.warmup))
        await asyncio.gather(
            *(asyncio.wait_for(stream, args.chunks * args.interval + 1) for stream in warm),
            return_exceptions=True,
        )
        idle = await loop.run_in_executor(None, probe, port, "idle")
        log(f"{target.name}: idle RSS {idle['rss_kb'] / 1024:.1f} MB; opening {count} streams")
        firsts = [asyncio.Event() for _ in range(count)]
        started = time.monotonic()
        streams = [
            asyncio.ensure_future(read_stream(session, target.url, headers, first, delay=ramp * i / count))
            for i, first in enumerate(firsts)
        ]
        waiting = asyncio.gather(*(first.wait() for first in firsts))
        try:
            await asyncio.wait_for(waiting, lasting)
        except TimeoutError:
            log(f"{target.name}: not every stream had its first chunk in time")
        opened = time.monotonic() - started
        await asyncio.sleep(args.settle)
        held = await loop.run_in_executor(None, probe, port, "open")
        # streams that ended before the probe (a slow start) are not in its figures
        held["streams"] = sum(not stream.done() for stream in streams)
        log(f"{target.name}: {held['streams']} open at the probe; RSS {held['rss_kb'] / 1024:.1f} MB")
        outcomes = await asyncio.gather(*streams)
        await asyncio.sleep(1)
        after = await loop.run_in_executor(None, probe, port, "after")
    return {"idle": idle, "open": held, "after": after, "completed": sum(outcomes), "open_s": opened}


def run_target(
    procs: Procs, tmp: Path, name: str, upstream: tuple[str, int], redis: str | None, args, frames: int
):
    """One target measured in a fresh server: ``upstream`` is the slow upstream's URL and
    how many chunks its streams have; ``frames`` > 0 traces allocations."""
    directory = tmp / f"probe-{name}-{frames}"
    directory.mkdir()
    hook = tmp / f"hook-{name}-{frames}"
    hook.mkdir()
    shutil.copy(BENCH_DIR / "memory_hook.py", hook / "sitecustomize.py")
    saved = dict(os.environ)
    os.environ.update(
        # a worker busy in a traced snapshot misses gunicorn's heartbeat: no timeout then
        GUNICORN_CMD_ARGS=f"--timeout 0 {saved.get('GUNICORN_CMD_ARGS', '')}".strip(),
        STREAM_MEMORY_DIR=str(directory),
        STREAM_MEMORY_FRAMES=str(frames),
        PYTHONPATH=os.pathsep.join(p for p in (str(hook), saved.get("PYTHONPATH", "")) if p),
    )
    target = None
    try:
        target = start_target(procs, tmp, name, upstream[0], redis, args, frames)
        precheck(target)
        pid, port = probe_port(directory, target.master_pid)
        # a traced server is many times slower: fewer streams, opened over --trace-ramp seconds
        ramp, count = (args.trace_ramp, args.trace_streams) if frames else (0.0, args.streams)
        result = asyncio.run(measure(target, port, args, upstream[1], ramp, count))
        result["pid"] = pid
        return result
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if target is not None and target.proc is not None:
            procs.stop(target.proc)


# --------------------------------------------------------------------------
# the report


def rss_figures(result: dict) -> dict:
    idle, held, after = (result[k]["rss_kb"] for k in ("idle", "open", "after"))
    return {
        "idle_mb": round(idle / 1024, 1),
        "open_mb": round(held / 1024, 1),
        "after_mb": round(after / 1024, 1),
        "open_streams": result["open"]["streams"],
        "per_stream_kb": round((held - idle) / max(result["open"]["streams"], 1), 1),
        "completed": result["completed"],
    }


def object_growth(result: dict, top: int) -> list[tuple[str, float]]:
    streams = max(result["open"]["streams"], 1)
    idle, held = result["idle"]["objects"], result["open"]["objects"]
    growth = {kind: held.get(kind, 0) - idle.get(kind, 0) for kind in held}
    ranked = sorted(growth.items(), key=lambda item: -item[1])[:top]
    return [(kind, round(count / streams, 2)) for kind, count in ranked if count > 0]


def where(trace: tracemalloc.Traceback, code: Path) -> str:
    """An allocation's traceback in one line: the innermost frame and the innermost
    frames of the project's own code in ``code`` (the caller that made it)."""
    root = str(code) + os.sep
    frames = list(reversed(trace))  # a Traceback runs from the oldest frame: innermost first
    ours = [f for f in frames if f.filename.startswith(root) and "/.venv/" not in f.filename]
    shown = [] if frames[0] in ours else [f"{Path(frames[0].filename).name}:{frames[0].lineno}"]
    shown += [f"{os.path.relpath(frame.filename, code)}:{frame.lineno}" for frame in ours[:3]]
    return " < ".join(shown)


def allocation_sites(result: dict, top: int, code: Path) -> dict:
    streams = max(result["open"]["streams"], 1)
    filters = [tracemalloc.Filter(False, pattern) for pattern in PROBE_FILES]
    idle = tracemalloc.Snapshot.load(result["idle"]["snapshot"]).filter_traces(filters)
    held = tracemalloc.Snapshot.load(result["open"]["snapshot"]).filter_traces(filters)
    sites: dict = {}
    for key in ("traceback", "lineno"):
        stats = held.compare_to(idle, key)
        total = sum(stat.size_diff for stat in stats)
        sites[key] = {
            "open_streams": streams,
            "total_per_stream_b": round(total / streams),
            "top": [
                {
                    "per_stream_b": round(stat.size_diff / streams),
                    "count_per_stream": round(stat.count_diff / streams, 2),
                    "where": where(stat.traceback, code),
                }
                for stat in stats[:top]
            ],
        }
    return sites


def print_report(report: dict) -> None:
    print()
    print(f"{report['streams']} concurrent streams ({report['chunks']} chunks x {report['interval']}s)")
    for name, figures in report["targets"].items():
        rss = figures.get("rss")
        print(f"\n=== {name} ===")
        if rss:
            print(
                f"RSS idle {rss['idle_mb']} MB, {rss['open_streams']} open {rss['open_mb']} MB, "
                f"after {rss['after_mb']} MB: {rss['per_stream_kb']} KB per stream "
                f"({rss['completed']}/{report['streams']} ended with [DONE])"
            )
        if figures.get("objects"):
            print("live objects per stream (gc-tracked, by type):")
            print("  " + ", ".join(f"{kind} {count}" for kind, count in figures["objects"]))
        for key, sites in figures.get("sites", {}).items():
            print(
                f"tracemalloc open - idle by {key} ({sites['open_streams']} open): "
                f"{sites['total_per_stream_b']} B per stream"
            )
            for site in sites["top"]:
                print(f"  {site['per_stream_b']:>7} B {site['count_per_stream']:>6} blocks  {site['where']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(TARGETS), help=f"a subset of {','.join(TARGETS)}")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--warmup", type=int, default=20, help="streams read to the end first")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between all open and the probe")
    parser.add_argument("--frames", type=int, default=12, help="tracemalloc frames per allocation")
    parser.add_argument(
        "--trace-chunks",
        type=int,
        default=120,
        help="chunks of the traced run's streams: longer, as tracing slows their start (default 120)",
    )
    parser.add_argument("--trace-ramp", type=float, default=15.0, help="seconds the traced run opens over")
    parser.add_argument("--trace-streams", type=int, default=300, help="streams of the traced run")
    parser.add_argument("--no-trace", action="store_true", help="RSS only (no tracemalloc run)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument(
        "--code", type=Path, default=REPO_ROOT, help="the gateway code to run (another commit's export)"
    )
    args = parser.parse_args(argv)
    args.targets = [name.strip() for name in args.only.split(",") if name.strip()]
    if not args.targets or any(name not in TARGETS for name in args.targets):
        parser.error(f"--only takes a comma-separated subset of {','.join(TARGETS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    raise_nofile_limit(4 * args.streams + 1024)  # both ends of every stream, and the upstream's
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="gwstreammem-"))
    report: dict = {
        "streams": args.streams,
        "chunks": args.chunks,
        "interval": args.interval,
        "targets": {},
    }
    try:
        upstream = (start_slow_stream(procs, tmp, args.chunks, args.interval, 1, 4096), args.chunks)
        if not args.no_trace:
            (tmp / "traced").mkdir()
            traced_upstream = (
                start_slow_stream(procs, tmp / "traced", args.trace_chunks, args.interval, 1, 4096),
                args.trace_chunks,
            )
        redis = start_redis(procs, tmp) if "gateway-redis" in args.targets else None
        for name in args.targets:
            if name == "gateway-redis" and redis is None:
                log("gateway-redis: skipped (no redis-server)")
                continue
            figures: dict = {}
            url = redis + "/0" if name == "gateway-redis" else None
            rss = run_target(procs, tmp, name, upstream, url, args, frames=0)
            figures["rss"] = rss_figures(rss)
            figures["objects"] = object_growth(rss, args.top)
            if not args.no_trace:
                traced = run_target(procs, tmp, name, traced_upstream, url, args, frames=args.frames)
                figures["sites"] = allocation_sites(traced, args.top, args.code.resolve())
            report["targets"][name] = figures
    except BenchError as exc:
        log(f"ERROR: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted, cleaning up")
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print_report(report)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
