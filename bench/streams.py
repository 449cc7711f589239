"""The streaming test of bench/run.py: thousands of concurrent slow streams through a server.

``run_streams`` starts the load generator (bench/stream_client.py, the streams split over a
few processes), and while the streams run samples, from /proc, every worker's RSS (every
0.5 s) and how many established connections each worker holds on the server's port (every
2 s until all the streams are open). It returns the figures bench/run.py reports; goals
are judged by ``stream_goals``. ``kernel_limits`` checks (and, as root, raises for the run)
the kernel settings 10,000 + 10,000 loopback connections need.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
CLIENT = BENCH_DIR / "stream_client.py"
STREAMS_PER_CLIENT = 1000  # one client process per 1,000 streams...
MAX_CLIENTS = 4  # ...up to 4 (2 cores: more processes add no CPU, only switching)
START_DELAY_S = 3.0  # the client processes import aiohttp and wait for the same start time
RSS_EVERY_S = 0.5
SPREAD_EVERY_S = 2.0

GOAL_STREAM_RSS_MB = 250.0  # each worker's peak RSS
GOAL_FIRST_CHUNK_OVER_PASSTHROUGH = 2.0  # first-chunk p50, gateway over passthrough
GOAL_BUSIEST_WORKER_SHARE = 0.6  # of the streams, held by the busiest worker


class StreamTestError(Exception):
    """The streaming test could not run; the text says why."""


Spawn = Callable[..., subprocess.Popen]  # Procs.start(name, argv, log_path=..., cwd=...)


# --------------------------------------------------------------------------
# processes and sockets, from /proc


def child_pids(parent: int) -> list[int]:
    """Worker processes: children of *parent*, minus multiprocessing helpers."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if b"resource_tracker" in cmdline or b"semaphore_tracker" in cmdline:
            continue
        pids.append(int(entry))
    return pids


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process *pid* has open."""
    inodes = set()
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return inodes
    for name in names:
        try:
            link = os.readlink(f"{folder}/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def established_on_port(port: int) -> set[int]:
    """Inodes of the established TCP connections whose local port is *port* (the server's
    side of its clients' connections), from /proc/net/tcp and tcp6."""
    suffix = f":{port:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                next(rows, None)
                for row in rows:
                    fields = row.split()
                    if fields[3] == "01" and fields[1].endswith(suffix):
                        inodes.add(int(fields[9]))
        except OSError:
            continue
    return inodes


def listen_drops() -> int:
    """The kernel's count of connections refused or dropped by full accept/SYN queues
    (TcpExt ListenOverflows + ListenDrops, machine-wide): a rise during a run means the
    backlog, not the server, delayed connections (each drop costs a 1 s SYN retry)."""
    try:
        header, values = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()[:2]]
    except (OSError, ValueError):
        return 0
    row = dict(zip(header[1:], values[1:], strict=False))
    return int(row.get("ListenOverflows", 0)) + int(row.get("ListenDrops", 0))


def connections_by_worker(port: int, workers: list[int]) -> dict[int, int]:
    """How many of the connections established on *port* each worker holds."""
    established = established_on_port(port)
    return {pid: len(socket_inodes(pid) & established) for pid in workers}


# --------------------------------------------------------------------------
# kernel limits


def nofile_needed(streams: int) -> int:
    # a worker holding every stream has 2 sockets per stream (client and upstream)
    return 2 * streams + 4096


def raise_nofile_limit(need: int) -> int:
    """Raise this process's RLIMIT_NOFILE (children inherit it) to *need* or the hard
    limit; as root the hard limit too, up to fs.nr_open. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            ceiling = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            ceiling = need
        wanted = min(need, ceiling)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            soft, hard = wanted, wanted
        except (ValueError, OSError):
            pass  # not root: the hard limit stays
    target = hard if hard != resource.RLIM_INFINITY else max(need, soft)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def backlog_for(streams: int) -> int:
    """Listen backlog for the servers: every stream may connect at once."""
    return max(4096, streams + 1024)


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> bool:
    try:
        Path("/proc/sys", *name.split(".")).write_text(value)
    except OSError:
        return False
    return True


def kernel_limits(streams: int, log: Callable[[str], None]) -> Callable[[], None]:
    """Check what *streams* concurrent streams through a proxy need on loopback: the
    accept queue (net.core.somaxconn caps every listen backlog), the half-open queue, and
    ephemeral ports (a client and an upstream connection per stream). As root the low ones
    are raised for the run; otherwise the sysctl command to run is printed. Returns the
    function that restores what was changed."""
    backlog = backlog_for(streams)
    low, high = 32768, 60999
    ports = _read_sysctl("net.ipv4.ip_local_port_range")
    if ports:
        low, high = (int(part) for part in ports.split())
    wanted: dict[str, tuple[bool, str]] = {}  # name -> (too low, value wanted)
    for name in ("net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"):
        current = _read_sysctl(name)
        if current is not None:
            wanted[name] = (int(current) < backlog, str(backlog))
    if ports:
        # 2 ephemeral ports per stream (a connection to the server, one to the upstream);
        # loopback connections of the previous target in TIME_WAIT are reused (tcp_tw_reuse)
        needed_ports = 2 * streams + 2048
        wanted["net.ipv4.ip_local_port_range"] = (
            high - low + 1 < needed_ports,
            f"{max(1024, 65535 - needed_ports)}\t65535",
        )
    restore: list[tuple[str, str]] = []
    missing = []
    for name, (too_low, value) in wanted.items():
        if not too_low:
            continue
        before = _read_sysctl(name) or ""
        if os.geteuid() == 0 and _write_sysctl(name, value):
            restore.append((name, before))
            log(f"set {name} = {value} for the run (was {before.split()}; restored at the end)")
        else:
            missing.append(f"{name}={value.replace(chr(9), ' ')}")
    if missing:
        log(
            f"kernel limits too low for {streams} streams; as root run: sysctl -w "
            + " ".join(f"'{item}'" for item in missing)
            + " (connections may wait in SYN retries or fail to bind)"
        )

    def undo() -> None:
        for name, before in restore:
            _write_sysctl(name, before)

    return undo


# --------------------------------------------------------------------------
# the test


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of sorted *values*."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(fraction * len(values)) - 1))]


def client_count(streams: int) -> int:
    return max(1, min(MAX_CLIENTS, math.ceil(streams / STREAMS_PER_CLIENT)))


def run_streams(
    *,
    url: str,
    master_pid: int,
    body: dict,
    headers: dict[str, str],
    count: int,
    seconds_per_stream: float,
    clients: int,
    spawn: Spawn,
    stop: Callable[[subprocess.Popen], None],
    folder: Path,
    log: Callable[[str], None],
) -> dict:
    """*count* concurrent streams to *url* (a server whose workers are *master_pid*'s
    children) from *clients* processes; the figures of the run."""
    port = urlsplit(url).port
    if port is None:
        raise StreamTestError(f"no port in {url}")
    workers = child_pids(master_pid)
    if not workers:
        raise StreamTestError(f"no worker processes under pid {master_pid}")
    folder.mkdir(parents=True, exist_ok=True)
    shares = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    start_at = time.time() + START_DELAY_S
    timeout = seconds_per_stream + 180
    procs = []
    for i, share in enumerate(shares):
        argv = [
            sys.executable,
            str(CLIENT),
            "--url",
            url,
            "--count",
            str(share),
            "--body",
            json.dumps(body),
            "--start-at",
            str(start_at),
            "--timeout",
            str(timeout),
            "--out",
            str(folder / f"client-{i}.json"),
        ]
        for name, value in headers.items():
            argv += ["--header", f"{name}: {value}"]
        procs.append(spawn(f"stream-client-{i}", argv, log_path=folder / f"client-{i}.log"))

    drops_before = listen_drops()
    baseline = {pid: mb for pid in workers if (mb := rss_mb(pid)) is not None}
    peak: dict[int, float] = dict(baseline)
    spread: dict[int, int] = {}
    spread_cost = 0.0
    flat = 0  # spread samples in a row that found no more connections than the best one
    next_spread = start_at
    deadline = start_at + timeout + 30
    try:
        while any(proc.poll() is None for proc in procs):
            now = time.time()
            if now > deadline:
                raise StreamTestError(f"the stream clients did not finish within {timeout + 30:.0f}s")
            for pid in workers:
                mb = rss_mb(pid)
                if mb is not None:
                    peak[pid] = max(peak.get(pid, 0.0), mb)
            # the peak of the spread: the sample with the most connections, taken until all
            # are open or (some failed) the count stops growing; reading /proc/net/tcp with
            # 40,000 sockets costs ~0.4 s of CPU, so not all the run long
            if now >= next_spread and sum(spread.values()) < count and flat < 3:
                began = time.perf_counter()
                sample = connections_by_worker(port, workers)
                spread_cost = max(spread_cost, time.perf_counter() - began)
                if sum(sample.values()) > sum(spread.values()):
                    spread, flat = sample, 0
                elif spread:
                    flat += 1
                next_spread = now + SPREAD_EVERY_S
            time.sleep(RSS_EVERY_S)
    finally:
        for proc in procs:
            stop(proc)

    outcomes = []
    for i, proc in enumerate(procs):
        path = folder / f"client-{i}.json"
        try:
            outcomes.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            log_tail = (folder / f"client-{i}.log").read_text(errors="replace")[-1500:]
            raise StreamTestError(
                f"stream client {i} (exit {proc.returncode}) wrote no summary ({exc}):\n{log_tail}"
            ) from None
    first = sorted(value for outcome in outcomes for value in outcome["first_chunk_s"])
    failures: dict[str, int] = {}
    for outcome in outcomes:
        for reason, n in outcome["failures"].items():
            failures[reason] = failures.get(reason, 0) + n
    held = sum(spread.values())
    ended = max(outcome["ended_at"] for outcome in outcomes)
    return {
        "streams": count,
        "completed": sum(outcome["completed"] for outcome in outcomes),
        "seconds": round(ended - start_at, 2),
        "first_chunk_p50_s": _round(percentile(first, 0.5)),
        "first_chunk_p99_s": _round(percentile(first, 0.99)),
        "first_chunk_max_s": _round(first[-1] if first else None),
        "peak_rss_mb": {str(pid): round(mb, 1) for pid, mb in sorted(peak.items())},
        "max_worker_rss_mb": round(max(peak.values()), 1) if peak else None,
        "baseline_rss_mb": {str(pid): round(mb, 1) for pid, mb in sorted(baseline.items())},
        "connections_at_peak": {str(pid): n for pid, n in sorted(spread.items())},
        "busiest_worker_share": round(max(spread.values()) / held, 3) if held else None,
        "spread_sample_s": round(spread_cost, 3),
        "listen_drops": listen_drops() - drops_before,
        "clients": len(procs),
        "client_cpu_share": [outcome["cpu_share"] for outcome in outcomes],
        "client_ramp_s": [outcome["ramp_s"] for outcome in outcomes],
        "client_ramp_cpu_share": [outcome["ramp_cpu_share"] for outcome in outcomes],
        "client_start_late_s": max(outcome["late_s"] for outcome in outcomes),
        "failures": failures,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def stream_goals(gateway: dict | None, passthrough: dict | None) -> dict[str, str]:
    """The streaming goals of the gateway's run: all complete, each worker's peak RSS, the
    first chunk against the passthrough's, and how evenly the workers share the streams."""
    rss_goal = f"stream_max_worker_rss_mb<={GOAL_STREAM_RSS_MB:g}"
    chunk_goal = f"stream_first_chunk_p50_over_passthrough<={GOAL_FIRST_CHUNK_OVER_PASSTHROUGH:g}"
    spread_goal = f"stream_busiest_worker_share<={GOAL_BUSIEST_WORKER_SHARE:g}"
    if gateway is None:
        return dict.fromkeys(("stream_all_completed", rss_goal, chunk_goal, spread_goal), "not measured")
    complete = gateway["completed"] == gateway["streams"]
    # with streams failing the other figures say little
    judged = "pass" if complete else "invalid"

    def verdict(value: float | None, passed: bool) -> str:
        if value is None:
            return "not measured"
        return judged if passed or not complete else "fail"

    rss = gateway.get("max_worker_rss_mb")
    ratio = stream_first_chunk_ratio(gateway, passthrough)
    share = gateway.get("busiest_worker_share")
    return {
        "stream_all_completed": "pass" if complete else "fail",
        rss_goal: verdict(rss, rss is not None and rss <= GOAL_STREAM_RSS_MB),
        chunk_goal: verdict(ratio, ratio is not None and ratio <= GOAL_FIRST_CHUNK_OVER_PASSTHROUGH),
        spread_goal: verdict(share, share is not None and share <= GOAL_BUSIEST_WORKER_SHARE),
    }


def stream_first_chunk_ratio(gateway: dict | None, passthrough: dict | None) -> float | None:
    mine = (gateway or {}).get("first_chunk_p50_s")
    theirs = (passthrough or {}).get("first_chunk_p50_s")
    if mine is None or not theirs:
        return None
    return round(mine / theirs, 3)
