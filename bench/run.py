#!/usr/bin/env python
"""Benchmark harness for the AI API gateway (``make bench``).

Measures, with wrk, the chat-completions hot path of:

* ``direct``      - a static nginx fake upstream (the floor),
* ``passthrough`` - a minimal raw-ASGI aiohttp proxy (bench/passthrough.py,
                    the ceiling for any Python gateway),
* ``gateway``     - the real gateway (gunicorn + uvicorn workers, 2 workers),
* ``responses``   - the same gateway's ``POST /v1/responses`` (non-streaming,
                    ``store: false``), translated to chat completions against
                    the same nginx upstream,
* ``openai-to-anthropic`` - chat completions through an Anthropic-type provider
                    (nginx answers ``POST /v1/messages``),
* ``anthropic-to-openai`` - the gateway's ``POST /v1/messages`` (``x-api-key``)
                    translated to chat completions against nginx,
* ``litellm``     - LiteLLM proxy for comparison (with BENCH_LITELLM=1),

at 32 connections and at 1 connection, prints a table and writes
bench/results/latest.json. ``--stream`` adds the streaming test: 10,000
concurrent slow SSE streams through the gateway and through the passthrough
(bench/streams.py). See bench/README.md.

    .venv/bin/python bench/run.py [--duration 10] [--stream] [--only direct,passthrough,gateway,...]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# bench/ is this script's folder, first on sys.path
from streams import (
    StreamTestError,
    backlog_for,
    client_count,
    kernel_limits,
    nofile_needed,
    raise_nofile_limit,
    run_streams,
    stream_first_chunk_ratio,
    stream_goals,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
POST_LUA = BENCH_DIR / "post.lua"
LITELLM_VENV = BENCH_DIR / ".litellm-venv"

# the gateway's translated paths: each one's req/s is held against the passthrough's
TRANSLATED = ("responses", "openai-to-anthropic", "anthropic-to-openai")
TARGETS = ("direct", "passthrough", "relay", "gateway", *TRANSLATED, "litellm")
# "relay": the gateway at this commit, the relay alone before rate limits, quotas and
# reservations existed (issue 4's reference figure), run from a git worktree
RELAY_REF = "afe0425"
ENDPOINT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
REQUEST_BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}]}
# the "responses" target: the Responses API over the chat upstream (nothing stored)
RESPONSES_ENDPOINT = "/v1/responses"
RESPONSES_BODY = {"model": MODEL, "input": "Say hello", "store": False}
# the "anthropic-to-openai" target: Anthropic's Messages API over the chat upstream
MESSAGES_ENDPOINT = "/v1/messages"
MESSAGES_BODY = {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": "Say hello"}]}
ANTHROPIC_VERSION = "2023-06-01"
NGINX_BODY = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,'
    '"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant",'
    '"content":"Hello from nginx."},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}'
)
# what nginx answers on POST /v1/messages (the "openai-to-anthropic" target's upstream)
NGINX_MESSAGES_BODY = (
    '{"id":"msg_bench","type":"message","role":"assistant","model":"gpt-4o-mini",'
    '"content":[{"type":"text","text":"Hello from nginx."}],"stop_reason":"end_turn",'
    '"stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":4}}'
)
CONNECTIONS = ((32, 2), (1, 1))  # (connections, wrk threads)
WARMUP_SECONDS = 2

GOAL_GATEWAY_OVER_PASSTHROUGH = 0.8  # req/s at 32 connections
GOAL_P99_OVER_PASSTHROUGH = 2.0  # p99 at 32 connections
GOAL_P50_OVER_PASSTHROUGH_MS = 0.25  # p50 at 1 connection, gateway minus passthrough
GOAL_P50_OVERHEAD_MS = 0.6  # p50 at 1 connection, gateway minus nginx
GOAL_TRANSLATED_OVER_PASSTHROUGH = 0.5  # each translated path's req/s at 32 connections
GOAL_GATEWAY_OVER_LITELLM = 30.0
GOAL_GATEWAY_OVER_RELAY = 0.9  # limits, quotas and reservations cost at most 10 %


# the gateway instances measured with wrk: each its own SQLite file and Redis database
# (redis_db 1 is the streaming test's, 2 the relay target's); the rest are start_gateway's
# arguments
GATEWAY_VARIANTS: dict[str, dict] = {
    "gateway": {"redis_db": 0},
    "responses": {"redis_db": 3, "endpoint": RESPONSES_ENDPOINT, "body": RESPONSES_BODY},
    # chat completions in, Anthropic Messages to the upstream (nginx's /v1/messages)
    "openai-to-anthropic": {"redis_db": 4, "upstream_type": "anthropic"},
    # Anthropic Messages in (as Anthropic's SDK sends it), chat completions to the upstream
    "anthropic-to-openai": {
        "redis_db": 5,
        "endpoint": MESSAGES_ENDPOINT,
        "body": MESSAGES_BODY,
        "key_header": "x-api-key",
        "headers": {"anthropic-version": ANTHROPIC_VERSION},
    },
}


class BenchError(Exception):
    """A tool, a server or a target could not be set up; the text says why."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def one_line(text: str, limit: int = 300) -> str:
    """*text* with all whitespace collapsed, cut to *limit* characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe(exc: Exception) -> str:
    """A BenchError's own text; anything else with its type (it is a surprise)."""
    if isinstance(exc, BenchError | StreamTestError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc}"


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


# --------------------------------------------------------------------------
# processes


class Procs:
    """Every process the harness starts, each in its own process group."""

    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen]] = []

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        log_path: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen:
        with open(log_path, "wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.items.append((name, proc))
        return proc

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def stop(self, proc: subprocess.Popen, timeout: float = 5.0) -> None:
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
        # The leader may be gone while children (workers) linger: kill the rest.
        self._signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self.items = [(n, p) for n, p in self.items if p is not proc]

    def stop_all(self) -> None:
        for name, proc in reversed(list(self.items)):
            if proc.poll() is None:
                log(f"stopping {name} (pid {proc.pid})")
            self.stop(proc)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    # Interruptible even when started with SIGINT ignored (e.g. in the background).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)


# --------------------------------------------------------------------------
# tools


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/local/bin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


_apt_updated = False


def apt_install(packages: list[str]) -> bool:
    """apt-get install *packages*; True on success. Prints what it does."""
    global _apt_updated
    apt = shutil.which("apt-get")
    if not apt:
        log(f"apt-get not found: cannot install {' '.join(packages)}")
        return False
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if not sudo:
            log(f"not root and no sudo: cannot install {' '.join(packages)}")
            return False
        prefix = [sudo, "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    commands = []
    if not _apt_updated:
        commands.append(prefix + [apt, "update"])
    commands.append(prefix + [apt, "install", "-y", "--no-install-recommends", *packages])
    for cmd in commands:
        log("running: " + " ".join(cmd))
        result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()
            log(f"command failed (exit {result.returncode}):")
            for line in output[-15:]:
                print("    " + line)
            return False
        if cmd[-1] == "update":
            _apt_updated = True
    return True


def ensure_tools(tools: dict[str, str], *, required: bool = True) -> dict[str, str | None]:
    """Map binary -> path, installing the missing ones ({binary: apt package})."""
    paths = {name: find_binary(name) for name in tools}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        packages = sorted({tools[name] for name in missing})
        log(f"missing {', '.join(missing)}: installing {' '.join(packages)} with apt-get")
        ok = apt_install(packages)
        paths = {name: find_binary(name) for name in tools}
        still = [name for name, path in paths.items() if path is None]
        if still and required:
            hint = "" if ok else " (apt-get install failed, see above)"
            raise BenchError(
                f"{', '.join(still)} not available{hint}; install with: "
                f"sudo apt-get install -y {' '.join(packages)}"
            )
    return paths


# --------------------------------------------------------------------------
# network helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_request(
    url: str,
    *,
    body: dict | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int | None, bytes]:
    """One HTTP request with urllib; (status, body) or (None, error text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc).encode()


def wait_ready(
    name: str,
    url: str,
    proc: subprocess.Popen,
    log_path: Path,
    timeout: float = 60.0,
) -> None:
    """Wait for GET *url* to answer 200 while *proc* is alive."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(
                f"{name} exited with code {proc.returncode} before it was ready; "
                f"last output:\n{tail(log_path)}"
            )
        status, body = http_request(url, timeout=2)
        if status == 200:
            return
        last = f"{status}: {body[:200].decode(errors='replace')}"
        time.sleep(0.2)
    raise BenchError(
        f"{name} not ready after {timeout:.0f}s (GET {url} -> {last}); last output:\n{tail(log_path)}"
    )


def wait_port(name: str, port: int, proc: subprocess.Popen, log_path: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with code {proc.returncode}; output:\n{tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{name} did not listen on port {port}; output:\n{tail(log_path)}")


def venv_python() -> str:
    candidate = REPO_ROOT / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def venv_bin(name: str) -> str | None:
    for folder in (REPO_ROOT / ".venv" / "bin", Path(sys.executable).parent):
        candidate = folder / name
        if candidate.exists():
            return str(candidate)
    return shutil.which(name)


# --------------------------------------------------------------------------
# servers


@dataclass
class Target:
    name: str
    url: str  # full URL of the endpoint measured (chat completions unless said)
    auth: str | None = None  # Authorization header value
    proc: subprocess.Popen | None = None  # stopped after the measurement
    master_pid: int | None = None  # parent of the worker processes
    body: dict | None = None  # the request body (REQUEST_BODY when None)
    headers: dict[str, str] = field(default_factory=dict)  # more request headers

    def request_headers(self) -> dict[str, str]:
        return {"Authorization": self.auth, **self.headers} if self.auth else dict(self.headers)


def nginx_supports_e(nginx: str) -> bool:
    result = subprocess.run([nginx, "-v"], check=False, capture_output=True, text=True)
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    return bool(match) and tuple(map(int, match.groups())) >= (1, 19, 5)


def start_nginx(procs: Procs, tmp: Path, nginx: str) -> str:
    """Static fake upstream; returns its base URL (http://127.0.0.1:PORT)."""
    root = tmp / "nginx"
    root.mkdir()
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(
        f"""\
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 '{NGINX_BODY}';
        }}
        location = /v1/messages {{
            default_type application/json;
            return 200 '{NGINX_MESSAGES_BODY}';
        }}
        location = /health {{
            default_type text/plain;
            return 200 'ok';
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""
    )
    argv = [nginx, "-p", str(root), "-c", str(conf)]
    if nginx_supports_e(nginx):
        argv += ["-e", str(root / "error.log")]
    log_path = root / "nginx.log"
    proc = procs.start("nginx", argv, log_path=log_path)
    wait_port("nginx", port, proc, log_path)
    base = f"http://127.0.0.1:{port}"
    log(f"nginx fake upstream on {base} (pid {proc.pid})")
    return base


def start_redis(procs: Procs, tmp: Path) -> str | None:
    """Throwaway redis-server; returns its URL prefix or None (with a message)."""
    paths = ensure_tools({"redis-server": "redis-server"}, required=False)
    redis = paths["redis-server"]
    if not redis:
        log("redis-server not available: the gateway runs WITHOUT REDIS_URL")
        return None
    root = tmp / "redis"
    root.mkdir()
    port = free_port()
    argv = [
        redis,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(root),
        "--daemonize",
        "no",
        "--maxclients",
        "10000",
    ]
    log_path = root / "redis.log"
    proc = procs.start("redis-server", argv, log_path=log_path)
    try:
        wait_port("redis-server", port, proc, log_path)
    except BenchError as exc:
        log(f"{exc}\nthe gateway runs WITHOUT REDIS_URL")
        procs.stop(proc)
        return None
    log(f"redis-server on 127.0.0.1:{port} (pid {proc.pid})")
    return f"redis://127.0.0.1:{port}"


def start_passthrough(
    procs: Procs, tmp: Path, upstream: str, workers: int, name: str = "passthrough", backlog: int = 4096
) -> Target:
    root = tmp / name
    root.mkdir()
    port = free_port()
    env = dict(os.environ, BENCH_UPSTREAM=upstream)
    argv = [
        venv_python(),
        "-m",
        "uvicorn",
        "bench.passthrough:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--backlog",
        str(backlog),
        "--timeout-graceful-shutdown",
        "2",
    ]
    log_path = root / "server.log"
    proc = procs.start(name, argv, log_path=log_path, cwd=REPO_ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(name, base + "/health", proc, log_path)
    log(f"{name} (uvicorn, {workers} workers) on {base} -> {upstream}")
    return Target("passthrough", base + ENDPOINT, None, proc, proc.pid)


KEY_SNIPPET = """
from keys.models import APIKey
from keys.services import hash_key
key = APIKey.objects.get(key_hash=hash_key("KEY"))
"""

LIMITS_SNIPPET = """
from quotas.models import Quota
key.rpm_limit, key.tpm_limit, key.concurrency_limit = 10_000_000, 2_000_000_000, 100_000
key.save()
key.user.rpm_limit = 10_000_000
key.user.save()
Quota.objects.create(api_key=key, metric="requests", period="day", limit=1_000_000_000)
Quota.objects.create(user=key.user, metric="cost", period="month", limit=10**15)
print("limits on")
"""

# the demo's $100 covers a few thousand reservations at once, not 10,000 streams: $1M more
CREDIT_SNIPPET = """
from accounts.services import user_adjust_balance
from billing.models import BillingRecord
user_adjust_balance(user=key.user, amount=10**6 * 10**9, kind=BillingRecord.Kind.TOPUP, description="bench")
print("credit added")
"""


def start_gateway(
    procs: Procs,
    tmp: Path,
    upstream_v1: str,
    redis_url: str | None,
    workers: int,
    name: str = "gateway",
    limits: bool = True,
    code: Path = REPO_ROOT,
    target: str = "gateway",
    endpoint: str = ENDPOINT,
    body: dict | None = None,
    upstream_type: str = "openai",
    key_header: str = "Authorization",
    headers: dict[str, str] | None = None,
    backlog: int | None = None,
    credit: bool = False,
) -> Target:
    """migrate + bootstrap + gunicorn, in a fresh temp dir and database, running the code
    in ``code`` (this checkout, or a worktree of another commit)."""
    if not (code / "manage.py").exists():
        raise BenchError(f"{code / 'manage.py'} not found")
    gunicorn = venv_bin("gunicorn")
    if not gunicorn:
        raise BenchError("gunicorn is not installed in the venv")
    root = tmp / name
    root.mkdir()
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"sqlite:///{root / 'bench.sqlite3'}",
        SECRET_KEY="bench",
        DJANGO_DEBUG="0",
        LOG_LEVEL="WARNING",
        DATA_DIR=str(root / "data"),
    )
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    python = venv_python()

    def manage(*args: str) -> str:
        cmd = [python, "manage.py", *args]
        log(f"{name}: {one_line(' '.join(cmd[1:]), 120)}")
        try:
            result = subprocess.run(
                cmd,
                check=False,
                cwd=code,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"`manage.py {' '.join(args)}` timed out") from exc
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
            raise BenchError(f"`manage.py {' '.join(args)}` failed (exit {result.returncode}):\n{output}")
        return result.stdout

    manage("migrate", "--noinput")
    # the relay target's older bootstrap always made the demo user and key, and had no --demo
    bootstrap = (code / "accounts" / "management" / "commands" / "bootstrap.py").read_text()
    demo = ["--demo"] if '"--demo"' in bootstrap else []
    kind = [] if upstream_type == "openai" else ["--upstream-type", upstream_type]
    out = manage("bootstrap", *demo, "--upstream-url", upstream_v1, "--models", MODEL, *kind)
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines or not lines[-1].startswith("DEMO_API_KEY="):
        raise BenchError(
            "`manage.py bootstrap` did not end with a DEMO_API_KEY=<key> line; "
            f"stdout tail:\n{chr(10).join(lines[-10:]) or '(empty)'}"
        )
    key = lines[-1].split("=", 1)[1]
    if not key:
        raise BenchError("`manage.py bootstrap` printed an empty DEMO_API_KEY")
    # limits: every check of the reservation on (values high enough never to refuse): key
    # RPM/TPM/concurrency, user RPM, a key request quota and a user cost quota
    snippet = (LIMITS_SNIPPET if limits else "") + (CREDIT_SNIPPET if credit else "")
    if snippet:
        manage("shell", "-c", (KEY_SNIPPET + snippet).replace("KEY", key))

    port = free_port()
    argv = [
        gunicorn,
        "gateway_project.asgi:application",
        "-k",
        # the gateway's own worker (no proxy-header rewriting) where the code has it
        "gateway_project.workers.UvicornWorker"
        if (code / "gateway_project" / "workers.py").exists()
        else "uvicorn_worker.UvicornWorker",
        "-w",
        str(workers),
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    if backlog:
        argv += ["--backlog", str(backlog)]
    log_path = root / "gunicorn.log"
    proc = procs.start(name, argv, log_path=log_path, cwd=code, env=env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(name, base + "/health", proc, log_path, timeout=60)
    log(
        f"{name} (gunicorn, {workers} UvicornWorkers, "
        f"{'redis' if redis_url else 'no redis'}) on {base} -> {upstream_v1}"
    )
    if key_header.lower() == "authorization":
        return Target(target, base + endpoint, f"Bearer {key}", proc, proc.pid, body, dict(headers or {}))
    return Target(target, base + endpoint, None, proc, proc.pid, body, {key_header: key, **(headers or {})})


def relay_worktree(tmp: Path, ref: str) -> Path:
    """A detached git worktree of ``ref`` under ``tmp`` (removed again by ``drop_worktree``)."""
    path = tmp / "relay-code"
    result = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(path), ref],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"git worktree add {ref} failed: {one_line(result.stderr)}")
    return path


def drop_worktree(path: Path) -> None:
    subprocess.run(
        ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(path)],
        capture_output=True,
        check=False,
    )


def start_litellm(procs: Procs, tmp: Path, upstream: str, workers: int) -> Target:
    litellm = LITELLM_VENV / "bin" / "litellm"
    if not litellm.exists():
        if not (LITELLM_VENV / "bin" / "pip").exists():
            log(f"creating {LITELLM_VENV}")
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        cmd = [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"]
        log("running: " + " ".join(cmd) + "  (large, takes a while)")
        if subprocess.run(cmd, check=False).returncode != 0 or not litellm.exists():
            raise BenchError("pip install 'litellm[proxy]' failed")
    root = tmp / "litellm"
    root.mkdir()
    config = root / "config.yaml"
    config.write_text(
        f"""\
model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: {upstream}/v1
      api_key: sk-dummy-upstream-key
general_settings:
  master_key: sk-bench
litellm_settings:
  telemetry: false
"""
    )
    port = free_port()
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    for var in ("DATABASE_URL", "REDIS_URL", "REDIS_HOST"):
        env.pop(var, None)
    argv = [
        str(litellm),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
    ]
    log_path = root / "litellm.log"
    proc = procs.start("litellm", argv, log_path=log_path, cwd=root, env=env)
    base = f"http://127.0.0.1:{port}"
    wait_ready("litellm", base + "/health/liveliness", proc, log_path, timeout=180)
    log(f"litellm ({workers} workers) on {base} -> {upstream}/v1")
    return Target("litellm", base + ENDPOINT, "Bearer sk-bench", proc, proc.pid)


def start_slow_stream(
    procs: Procs, tmp: Path, chunks: int, interval: float, processes: int, backlog: int
) -> str:
    root = tmp / "slow_stream"
    root.mkdir()
    port = free_port()
    argv = [
        venv_python(),
        str(BENCH_DIR / "slow_stream.py"),
        "--port",
        str(port),
        "--chunks",
        str(chunks),
        "--interval",
        str(interval),
        "--processes",
        str(processes),
        "--backlog",
        str(backlog),
    ]
    log_path = root / "server.log"
    proc = procs.start("slow_stream", argv, log_path=log_path, cwd=REPO_ROOT)
    base = f"http://127.0.0.1:{port}"
    wait_ready("slow_stream", base + "/health", proc, log_path, timeout=30)
    log(f"slow streaming upstream on {base} ({chunks} chunks, {interval}s apart, {processes} processes)")
    return base


# --------------------------------------------------------------------------
# measurements


def precheck(target: Target) -> None:
    """One real request; anything but a 200 aborts the target (no benchmarking 401s)."""
    payload = target.body or REQUEST_BODY
    status, answer = http_request(target.url, body=payload, headers=target.request_headers())
    text = answer[:1000].decode(errors="replace")
    if status != 200:
        raise BenchError(f"pre-flight POST {target.url} -> {status}: {text}")
    log(f"{target.name}: pre-flight 200 {text[:100]}")


@dataclass
class WrkResult:
    target: str
    connections: int
    values: dict[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        v = self.values
        return int(v["non2xx"] + v["connect"] + v["read"] + v["write"] + v["timeout"])

    def as_json(self) -> dict:
        return {
            "target": self.target,
            "connections": self.connections,
            "rps": round(self.values["rps"], 1),
            "p50_ms": round(self.values["p50_ms"], 3),
            "p99_ms": round(self.values["p99_ms"], 3),
            "errors": self.errors,
        }


def run_wrk(
    wrk: str,
    target: Target,
    connections: int,
    threads: int,
    duration: int,
    verbose: bool = False,
) -> WrkResult:
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(POST_LUA),
        target.url,
    ]
    env = dict(os.environ, BENCH_AUTH=target.auth or "")
    env["BENCH_HEADERS"] = "\n".join(f"{name}: {value}" for name, value in target.headers.items())
    if target.body is not None:  # else post.lua's chat-completions body
        env["BENCH_BODY"] = json.dumps(target.body, separators=(",", ":"))
    try:
        result = subprocess.run(
            cmd,
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=duration + 60,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(cmd)}") from exc
    if verbose:
        print(result.stdout)
    line = next(
        (ln for ln in result.stdout.splitlines() if ln.startswith("BENCH_RESULT ")),
        None,
    )
    if result.returncode != 0 or line is None:
        raise BenchError(
            f"wrk failed (exit {result.returncode}): {' '.join(cmd)}\n"
            f"{result.stdout[-1500:]}{result.stderr[-1500:]}"
        )
    values = {}
    for item in line.split()[1:]:
        key, _, value = item.partition("=")
        values[key] = float(value)
    return WrkResult(target.name, connections, values)


def measure(wrk: str, target: Target, duration: int, verbose: bool) -> list[WrkResult]:
    precheck(target)
    log(f"{target.name}: warm-up {WARMUP_SECONDS}s")
    warm = run_wrk(wrk, target, 32, 2, WARMUP_SECONDS)
    if warm.errors:
        log(f"{target.name}: warm-up saw {warm.errors} errors")
    results = []
    for connections, threads in CONNECTIONS:
        res = run_wrk(wrk, target, connections, threads, duration, verbose)
        v = res.values
        flag = (
            ""
            if res.errors == 0
            else (
                f"  !! non2xx={v['non2xx']:.0f} connect={v['connect']:.0f} "
                f"read={v['read']:.0f} write={v['write']:.0f} timeout={v['timeout']:.0f}"
            )
        )
        log(
            f"{target.name} c={connections}: {v['rps']:.0f} req/s, p50 {v['p50_ms']:.3f} ms, "
            f"p99 {v['p99_ms']:.3f} ms, max {v['max_ms']:.1f} ms{flag}"
        )
        results.append(res)
    return results


# --------------------------------------------------------------------------
# streaming test (bench/streams.py)


def stream_test(
    procs: Procs, target: Target, tmp: Path, count: int, chunks: int, interval: float, clients: int
) -> dict:
    precheck(target)
    log(
        f"{target.name}: {count} concurrent streams ({chunks} chunks x {interval}s) "
        f"from {clients} client process{'es' if clients > 1 else ''}..."
    )
    result = run_streams(
        url=target.url,
        master_pid=target.master_pid or 0,
        body=dict(target.body or REQUEST_BODY, stream=True),
        headers=target.request_headers(),
        count=count,
        seconds_per_stream=chunks * interval,
        clients=clients,
        spawn=procs.start,
        stop=procs.stop,
        folder=tmp / f"stream-clients-{target.name}",
        log=log,
    )
    result = {"target": target.name, **result}
    log(
        f"{target.name}: {result['completed']}/{count} streams ended with [DONE] in "
        f"{result['seconds']}s; first chunk p50 {result['first_chunk_p50_s']}s "
        f"p99 {result['first_chunk_p99_s']}s; peak worker RSS {result['peak_rss_mb']} MB; "
        f"connections per worker at the peak {result['connections_at_peak']}; "
        f"client CPU share {result['client_cpu_share']} (opening burst {result['client_ramp_cpu_share']} "
        f"over {result['client_ramp_s']}s)"
    )
    if result["listen_drops"]:
        log(
            f"{target.name}: the kernel dropped {result['listen_drops']} connection attempts on full "
            "listen queues during the run (raise net.core.somaxconn / tcp_max_syn_backlog)"
        )
    for reason, n in list(result["failures"].items())[:5]:
        log(f"{target.name}:   {n} x {reason}")
    return result


# --------------------------------------------------------------------------
# report


def find(results: list[WrkResult], target: str, connections: int) -> WrkResult | None:
    return next(
        (r for r in results if r.target == target and r.connections == connections),
        None,
    )


def figure_key(target: str) -> str:
    return target.replace("-", "_")


def derive(results: list[WrkResult], duration: int) -> dict:
    if not results:
        return {}
    derived: dict = {"wrk_duration_s": duration}
    gw32, pt32 = find(results, "gateway", 32), find(results, "passthrough", 32)
    gw1, pt1 = find(results, "gateway", 1), find(results, "passthrough", 1)
    rl32 = find(results, "relay", 32)
    d1 = find(results, "direct", 1)
    ll32, ll1 = find(results, "litellm", 32), find(results, "litellm", 1)

    def ratio(a: WrkResult | None, b: WrkResult | None, figure: str = "rps") -> float | None:
        if a and b and b.values[figure]:
            return round(a.values[figure] / b.values[figure], 3)
        return None

    def p50_minus(a: WrkResult | None, b: WrkResult | None) -> float | None:
        if a and b:
            return round(a.values["p50_ms"] - b.values["p50_ms"], 3)
        return None

    derived["gateway_over_passthrough_rps_c32"] = ratio(gw32, pt32)
    derived["gateway_over_passthrough_p99_c32"] = ratio(gw32, pt32, "p99_ms")
    derived["gateway_minus_passthrough_p50_ms_c1"] = p50_minus(gw1, pt1)
    if rl32:
        derived["gateway_over_relay_rps_c32"] = ratio(gw32, rl32)
    derived["gateway_over_passthrough_rps_c1"] = ratio(gw1, pt1)
    derived["gateway_minus_direct_p50_ms_c1"] = p50_minus(gw1, d1)
    derived["passthrough_minus_direct_p50_ms_c1"] = p50_minus(pt1, d1)
    derived["gateway_rps_c32"] = round(gw32.values["rps"], 1) if gw32 else None
    for name in TRANSLATED:
        t32, t1 = find(results, name, 32), find(results, name, 1)
        if t32 or t1:
            key = figure_key(name)
            derived[f"{key}_over_passthrough_rps_c32"] = ratio(t32, pt32)
            derived[f"{key}_over_passthrough_p99_c32"] = ratio(t32, pt32, "p99_ms")
            derived[f"{key}_over_gateway_rps_c32"] = ratio(t32, gw32)
            derived[f"{key}_minus_gateway_p50_ms_c1"] = p50_minus(t1, gw1)
    if ll32 or ll1:
        derived["gateway_over_litellm_rps_c32"] = ratio(gw32, ll32)
        derived["litellm_minus_direct_p50_ms_c1"] = p50_minus(ll1, d1)
    invalid = [f"{r.target}@c{r.connections}" for r in results if r.errors]
    if invalid:
        derived["invalid_runs"] = invalid
    return derived


def goals(derived: dict, selected: list[str]) -> dict[str, str]:
    """Goal -> "pass", "fail", "invalid" (a run it needs had errors) or "not measured", for
    the wrk runs of the *selected* targets."""
    invalid = set(derived.get("invalid_runs", []))

    def judge(key: str, op: str, goal: float, *runs: str) -> tuple[str, str]:
        value = derived.get(key)
        if value is None:
            state = "not measured"
        elif any(run in invalid for run in runs):
            state = "invalid"
        else:
            state = "pass" if (value >= goal if op == ">=" else value <= goal) else "fail"
        return f"{key}{op}{goal:g}", state

    gw32, pt32, gw1, pt1 = "gateway@c32", "passthrough@c32", "gateway@c1", "passthrough@c1"
    wanted = [
        ("gateway_over_passthrough_rps_c32", ">=", GOAL_GATEWAY_OVER_PASSTHROUGH, gw32, pt32),
        ("gateway_over_passthrough_p99_c32", "<=", GOAL_P99_OVER_PASSTHROUGH, gw32, pt32),
        ("gateway_minus_passthrough_p50_ms_c1", "<=", GOAL_P50_OVER_PASSTHROUGH_MS, gw1, pt1),
        ("gateway_minus_direct_p50_ms_c1", "<=", GOAL_P50_OVERHEAD_MS, gw1, "direct@c1"),
    ]
    if "relay" in selected:
        wanted.append(("gateway_over_relay_rps_c32", ">=", GOAL_GATEWAY_OVER_RELAY, gw32, "relay@c32"))
    for name in TRANSLATED:
        if name in selected:
            key = f"{figure_key(name)}_over_passthrough_rps_c32"
            wanted.append((key, ">=", GOAL_TRANSLATED_OVER_PASSTHROUGH, f"{name}@c32", pt32))
    if "litellm" in selected:
        wanted.append(("gateway_over_litellm_rps_c32", ">=", GOAL_GATEWAY_OVER_LITELLM, gw32, "litellm@c32"))
    return dict(judge(*goal) for goal in wanted)


def print_report(
    results: list[WrkResult],
    derived: dict,
    unavailable: dict[str, str],
    streams: dict[str, dict],
) -> None:
    print()
    width = max([len(r.target) for r in results] + [len(name) for name in unavailable] + [12])
    header = (
        f"{'target':<{width}} {'conns':>5} {'rps':>10} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'rps/pt':>7} {'p99/pt':>7} {'errors':>8}"
    )
    if results:
        print(header)
        print("-" * len(header))
    for r in results:
        v = r.values
        errors = f"{r.errors}" + (" !!" if r.errors else "")
        # against the passthrough at the same connection count, in this run
        pt = find(results, "passthrough", r.connections)
        rps_pt = f"{v['rps'] / pt.values['rps']:.3f}" if pt and pt.values["rps"] else "-"
        p99_pt = f"{v['p99_ms'] / pt.values['p99_ms']:.2f}" if pt and pt.values["p99_ms"] else "-"
        print(
            f"{r.target:<{width}} {r.connections:>5} {v['rps']:>10.1f} {v['p50_ms']:>9.3f} "
            f"{v['p99_ms']:>9.3f} {rps_pt:>7} {p99_pt:>7} {errors:>8}"
        )
    if any(r.errors for r in results):
        print("!! = non-2xx responses or socket errors: those figures are NOT valid")
    for name, reason in unavailable.items():
        print(f"{name:<{width}} not measured: {one_line(reason)}")
    print()

    def fmt(value: object, unit: str = "") -> str:
        return "n/a" if value is None else f"{value}{unit}"

    lines = [
        ("gateway rps / passthrough rps (32 conns)", "gateway_over_passthrough_rps_c32", ""),
        ("gateway p99 / passthrough p99 (32 conns)", "gateway_over_passthrough_p99_c32", ""),
        ("gateway p50 - passthrough p50 (1 conn)", "gateway_minus_passthrough_p50_ms_c1", " ms"),
        ("gateway p50 - direct p50 (1 conn)", "gateway_minus_direct_p50_ms_c1", " ms"),
        ("passthrough p50 - direct p50 (1 conn)", "passthrough_minus_direct_p50_ms_c1", " ms"),
        (f"gateway rps / relay rps (32 conns, relay = {RELAY_REF})", "gateway_over_relay_rps_c32", ""),
    ]
    for name in TRANSLATED:
        key = figure_key(name)
        lines.append((f"{name} rps / passthrough rps (32 conns)", f"{key}_over_passthrough_rps_c32", ""))
        lines.append((f"{name} rps / gateway rps (32 conns)", f"{key}_over_gateway_rps_c32", ""))
    lines.append(("gateway rps / litellm rps (32 conns)", "gateway_over_litellm_rps_c32", ""))
    shown = [(label, key, unit) for label, key, unit in lines if key in derived]
    if shown:
        pad = max(len(label) for label, _, _ in shown) + 1
        for label, key, unit in shown:
            print(f"{label + ':':<{pad}} {fmt(derived[key], unit)}")
        print()
    for label, s in streams.items():
        print(
            f"stream {label}: {s['completed']}/{s['streams']} ended with [DONE] in {s['seconds']}s; "
            f"first chunk p50 {fmt(s['first_chunk_p50_s'], ' s')}, p99 {fmt(s['first_chunk_p99_s'], ' s')}; "
            f"peak RSS per worker (MB) {s['peak_rss_mb']}; connections per worker at the peak "
            f"{s['connections_at_peak']} (busiest {fmt(s['busiest_worker_share'])}); "
            f"{s['clients']} client processes, CPU share {s['client_cpu_share']}"
        )
    if "stream_first_chunk_p50_over_passthrough" in derived:
        print(
            "stream first chunk p50, gateway / passthrough: "
            f"{fmt(derived['stream_first_chunk_p50_over_passthrough'])}"
        )
    if streams:
        print()
    for goal, state in derived.get("goals", {}).items():
        print(f"goal {goal}: {state.upper() if state in ('pass', 'fail') else state}")
    print()


def machine_info() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the gateway against nginx, a raw passthrough and LiteLLM."
    )
    parser.add_argument(
        "--duration",
        type=int,
        default=10,
        help="seconds per wrk measurement (default 10)",
    )
    parser.add_argument(
        "--only",
        default=",".join(TARGETS),
        help="comma-separated targets (default: all); BENCH_LITELLM=1 adds litellm to any list",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="also run the concurrent-streams test (gateway, passthrough as reference)",
    )
    parser.add_argument(
        "--stream-only",
        action="store_true",
        help="run only the streaming test (no wrk runs)",
    )
    parser.add_argument(
        "--streams",
        type=int,
        default=10_000,
        help="concurrent streams for --stream (default 10000)",
    )
    parser.add_argument("--stream-chunks", type=int, default=40)
    parser.add_argument("--stream-interval", type=float, default=0.5)
    parser.add_argument(
        "--stream-clients",
        type=int,
        default=None,
        help="load-generator processes for --stream (default: one per 1,000 streams, at most 4)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes for passthrough/gateway/litellm (default 2)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results file (default bench/results/latest.json; bench/results/stream.json with --stream-only)",
    )
    parser.add_argument(
        "--keep-tmp",
        action="store_true",
        help="keep the temp dir (configs, logs, sqlite) for inspection",
    )
    parser.add_argument(
        "--no-limits",
        action="store_true",
        help="bench the gateway's key without rate limits and quotas (the balance is still reserved)",
    )
    parser.add_argument(
        "--relay-ref",
        default=RELAY_REF,
        help=f"commit benched as the 'relay' target (default {RELAY_REF}: the relay before limits)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print wrk's output")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown or not names:
        parser.error(f"--only takes a comma-separated subset of {','.join(TARGETS)}")
    args.targets = [t for t in TARGETS if t in names]
    if args.stream_only:
        args.stream = True
    if args.output is None:
        args.output = RESULTS_DIR / ("stream.json" if args.stream_only else "latest.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    nofile = raise_nofile_limit(nofile_needed(args.streams if args.stream else 0))

    targets = list(args.targets)
    if os.environ.get("BENCH_LITELLM") == "1":
        if "litellm" not in targets and not args.stream_only:
            targets.append("litellm")
            log("BENCH_LITELLM=1: litellm is measured too")
    elif "litellm" in targets:
        targets.remove("litellm")
        log("litellm skipped: set BENCH_LITELLM=1 to benchmark it too")

    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="gwbench-"))
    results: list[WrkResult] = []
    unavailable: dict[str, str] = {}
    streams: dict[str, dict] = {}
    redis_url: str | None = None
    redis_started = False
    restore_kernel = None
    log(f"temp dir {tmp}; RLIMIT_NOFILE {nofile}; {os.cpu_count()} CPUs")

    def gateway_redis(db: int) -> str | None:
        # One redis-server, one database per gateway instance: each instance has
        # its own SQLite file, so cached rows (same ids) must not leak between them.
        nonlocal redis_url, redis_started
        if not redis_started:
            redis_started = True
            redis_url = start_redis(procs, tmp)
        return f"{redis_url}/{db}" if redis_url else None

    try:
        wrk_targets = [] if args.stream_only else targets
        if wrk_targets:
            tools = ensure_tools({"nginx": "nginx", "wrk": "wrk"})
            nginx, wrk = str(tools["nginx"]), str(tools["wrk"])
            upstream = start_nginx(procs, tmp, nginx)

            for name in wrk_targets:
                log(f"=== {name} ===")
                target: Target | None = None
                try:
                    if name == "direct":
                        target = Target("direct", upstream + ENDPOINT)
                    elif name == "passthrough":
                        target = start_passthrough(procs, tmp, upstream, args.workers)
                    elif name in GATEWAY_VARIANTS:
                        variant = dict(GATEWAY_VARIANTS[name])
                        db = variant.pop("redis_db")
                        target = start_gateway(
                            procs,
                            tmp,
                            upstream + "/v1",
                            gateway_redis(db),
                            args.workers,
                            name=name,
                            limits=not args.no_limits,
                            target=name,
                            **variant,
                        )
                    elif name == "relay":
                        worktree = relay_worktree(tmp, args.relay_ref)
                        target = start_gateway(
                            procs,
                            tmp,
                            upstream + "/v1",
                            gateway_redis(2),
                            args.workers,
                            name="relay",
                            limits=False,
                            code=worktree,
                            target="relay",
                        )
                    else:
                        target = start_litellm(procs, tmp, upstream, args.workers)
                    results.extend(measure(wrk, target, args.duration, args.verbose))
                except Exception as exc:  # report, then go on with the other targets
                    unavailable[name] = describe(exc)
                    log(f"{name}: NOT MEASURED: {unavailable[name]}")
                finally:
                    if target is not None and target.proc is not None:
                        procs.stop(target.proc)

        if args.stream:
            stream_targets = [t for t in ("gateway", "passthrough") if t in targets]
            backlog = backlog_for(args.streams)
            clients = args.stream_clients or client_count(args.streams)
            if not stream_targets:
                log("--stream needs gateway and/or passthrough in --only")
            else:
                if nofile < nofile_needed(args.streams):
                    log(
                        f"RLIMIT_NOFILE {nofile} < {nofile_needed(args.streams)}: a worker holding most of "
                        f"{args.streams} streams may run out of file descriptors (raise the hard limit)"
                    )
                restore_kernel = kernel_limits(args.streams, log)
                slow = start_slow_stream(
                    procs,
                    tmp,
                    args.stream_chunks,
                    args.stream_interval,
                    processes=1 if args.streams <= 1000 else 2,
                    backlog=backlog,
                )
            for name in stream_targets:
                log(f"=== stream: {name} ===")
                target = None
                try:
                    if name == "gateway":
                        target = start_gateway(
                            procs,
                            tmp,
                            slow + "/v1",
                            gateway_redis(1),
                            args.workers,
                            name="gateway-stream",
                            limits=not args.no_limits,
                            backlog=backlog,
                            credit=True,
                        )
                    else:
                        target = start_passthrough(
                            procs, tmp, slow, args.workers, name="passthrough-stream", backlog=backlog
                        )
                    streams[name] = stream_test(
                        procs, target, tmp, args.streams, args.stream_chunks, args.stream_interval, clients
                    )
                except Exception as exc:  # report, then go on with the other targets
                    unavailable[f"stream:{name}"] = describe(exc)
                    log(f"stream {name}: NOT MEASURED: {unavailable[f'stream:{name}']}")
                finally:
                    if target is not None and target.proc is not None:
                        procs.stop(target.proc)
    except BenchError as exc:
        log(f"ERROR: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted, cleaning up")
        return 130
    except SystemExit:
        log("terminated by a signal, cleaning up")
        raise
    finally:
        procs.stop_all()
        if restore_kernel is not None:
            restore_kernel()
        if (tmp / "relay-code").exists():
            drop_worktree(tmp / "relay-code")
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    derived = derive(results, args.duration)
    if unavailable:
        derived["unavailable"] = {k: one_line(v) for k, v in unavailable.items()}
    derived["goals"] = {} if args.stream_only else goals(derived, targets)
    if args.stream:
        derived["stream_first_chunk_p50_over_passthrough"] = stream_first_chunk_ratio(
            streams.get("gateway"), streams.get("passthrough")
        )
        derived["goals"].update(stream_goals(streams.get("gateway"), streams.get("passthrough")))
    print_report(results, derived, unavailable, streams)

    report: dict = {
        "machine": machine_info(),
        "gateway_limits": not args.no_limits,
        "relay_ref": args.relay_ref if "relay" in targets else None,
        "runs": [r.as_json() for r in results],
        "derived": derived,
    }
    if "gateway" in streams:
        report["stream"] = streams["gateway"]
    if "passthrough" in streams:
        report["stream_passthrough"] = streams["passthrough"]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.output}")
    failed = bool(unavailable) or any(r.errors for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
