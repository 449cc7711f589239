"""Real Redis faults against the running gateway (make test-full; skipped without Redis).

The server is shut down with SHUTDOWN NOSAVE and a new redis-server is started on the same
port, as after a crash and a restart: requests that need the counter store answer 503 with
Retry-After in their protocol's shape (never 500) while it is gone, the gateway serves again
by itself once it is back, and the usage of the refused requests is not lost."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from urllib.parse import urlparse

import httpx
import orjson
import pytest
import redis
from django.conf import settings

from billing.models import UsageLog
from tests.conftest import settle_usage

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="Redis faults need REDIS_URL (make test-full)")

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
MESSAGES = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)


def stop_redis() -> None:
    with contextlib.suppress(redis.ConnectionError, redis.ResponseError):
        _client().shutdown(nosave=True)  # the server closes the connection as it goes
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            _client().ping()
        except redis.ConnectionError:
            return
        time.sleep(0.05)
    raise AssertionError("redis-server did not stop")


def start_redis() -> None:
    url = urlparse(settings.REDIS_URL)
    subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(url.port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ).wait(timeout=10)  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            _client().ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("redis-server did not start")


@pytest.fixture
def redis_back(gateway):
    yield
    try:
        _client().ping()
    except redis.ConnectionError:
        start_redis()


def post(gateway, path: str, key: str, body: dict) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if path.endswith("completions") else {"x-api-key": key}
    return httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=30)


def test_redis_down_answers_503_then_the_gateway_recovers_without_losing_usage(
    gateway, world, fake, redis_back
):
    world.route(world.provider(fake))
    user = world.user("alice")
    assert post(gateway, "/v1/chat/completions", world.key(user), CHAT).status_code == 200
    cold = world.key(user)  # no lease in any worker yet: it must ask the store

    stop_redis()
    refused = []
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for path, body in (("/v1/chat/completions", CHAT), ("/v1/messages", MESSAGES)):
                answer = post(gateway, path, cold, body)
                assert answer.status_code == 503, answer.text
                assert answer.headers["retry-after"] == "2"
                if path == "/v1/messages":
                    assert answer.json()["type"] == "error"
                    assert answer.json()["error"]["type"] == "api_error"
                else:
                    assert answer.json()["error"]["code"] == "store_unavailable"
                refused.append(answer.headers["x-request-id"])
            time.sleep(0.2)
        # an unknown key is still a 401 (its failure count is what the outage loses)
        assert post(gateway, "/v1/chat/completions", "sk-gw-unknown", CHAT).status_code == 401
    finally:
        start_redis()

    # back by itself: the same worker reconnects, no restart
    deadline = time.monotonic() + 10
    answer = post(gateway, "/v1/chat/completions", cold, CHAT)
    while answer.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = post(gateway, "/v1/chat/completions", cold, CHAT)
    assert answer.status_code == 200, answer.text

    # the refused requests' usage events waited in the worker and reach the usage log
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        settle_usage()
        logged = set(UsageLog.objects.filter(request_id__in=refused).values_list("request_id", flat=True))
        if logged == set(refused):
            break
        time.sleep(0.2)
    assert logged == set(refused)
    assert set(UsageLog.objects.filter(request_id__in=refused).values_list("status_code", flat=True)) == {503}


def test_slots_of_leases_whose_flush_failed_come_back_when_redis_answers(gateway, world, fake, redis_back):
    """Redis stops answering (CLIENT PAUSE: the data stays) while three streams hold a key's
    three concurrency slots: their finishing flush times out, so their lease is lost. Once
    Redis answers again the worker gives the lease back at once; before, its slots stayed
    taken until the reservation expired (15 minutes: every request meanwhile got 429)."""
    import threading

    world.route(world.provider(fake))
    key = world.key(world.user("bob"), concurrency_limit=3)
    fake.script(*[{"chunk_delay": 0.3}] * 3)  # streams of about 3 s

    def stream() -> None:
        with httpx.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={"authorization": f"Bearer {key}"},
            timeout=60,
        ) as response:
            assert response.status_code == 200
            for _ in response.iter_bytes():
                pass

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.8)  # all three hold their slots
    _client().execute_command("CLIENT", "PAUSE", 8000, "ALL")  # longer than the relay's 3 s reply timeout
    for thread in threads:
        thread.join(timeout=30)
    time.sleep(8.5)  # the pause is over

    def burst() -> list[int]:
        results: list[int] = []

        def one() -> None:
            results.append(post(gateway, "/v1/chat/completions", key, CHAT).status_code)

        workers = [threading.Thread(target=one) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
        return results

    deadline = time.monotonic() + 10
    statuses = burst()
    while statuses != [200, 200, 200] and time.monotonic() < deadline:
        time.sleep(0.5)
        statuses = burst()
    assert statuses == [200, 200, 200]


def test_a_killed_workers_slots_come_back_within_thirty_seconds(gateway, world, fake):
    """kill -9 of a gateway process while its stream holds the key's only concurrency slot:
    the worker's heartbeat key expires, and the reaper (Celery beat every 10 s; called here
    as beat would) frees its leases within seconds, not after RELAY_RESERVATION_TTL
    (15 minutes of 429s before)."""
    import os
    import signal
    import sys

    from quotas.counters import get_store
    from tests.test_billing import _database_url, _free_port, _wait_http

    world.route(world.provider(fake))
    key = world.key(world.user("killed-worker"), concurrency_limit=1)
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": _database_url(), "REDIS_URL": settings.REDIS_URL, "DB_POOL_MAX": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "gateway_project.asgi:application", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # 30 s of answer: still in flight when the worker is killed, even on a loaded machine where
    # the first chunk reaches the test seconds late (9 chunks of 0.5 s sometimes had all come)
    slow = orjson.dumps({"chunk_delay": 0.5, "reply": " ".join(["slow"] * 60)}).decode()
    body = {"model": "gpt-4o-mini", "stream": True,
            "messages": [{"role": "user", "content": f"[[fake:{slow}]] go"}]}  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/health")
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                          headers={"authorization": f"Bearer {key}"}, timeout=20) as response:  # fmt: skip
            # the line iterator is kept: a generator expression over a temporary one would
            # close it when dropped, and with it the connection (the client leaving, which
            # the worker then settles before the kill lands)
            lines = response.iter_lines()
            next(line for line in lines if line.startswith("data:"))
            os.kill(server.pid, signal.SIGKILL)
            killed = time.monotonic()
    finally:
        server.wait(timeout=10)
    assert post(gateway, "/v1/chat/completions", key, CHAT).status_code == 429  # its slot is still taken
    store = get_store()
    answer = None
    while time.monotonic() - killed < 30:
        store.release_expired()
        answer = post(gateway, "/v1/chat/completions", key, CHAT)
        if answer.status_code == 200:
            break
        time.sleep(2)
    assert answer is not None and answer.status_code == 200, answer.text
    assert time.monotonic() - killed < 30


def test_a_killed_workers_streams_are_billed_from_their_checkpoints(gateway, world, fake):
    """kill -9 of a gunicorn worker with 12 streams in flight (and 8 that ended before):
    the reaper turns the checkpoints of the dead worker's streams into usage events, so at
    least 99 % of the tokens the upstream produced for them are billed; every request is
    billed exactly once (a stream that ended normally is never billed again from its
    checkpoint) and the money held in Redis for them all is free again once settled."""
    import os
    import signal
    import sys
    import threading
    from pathlib import Path

    from billing.models import BillingRecord
    from quotas.counters import get_store
    from relay.pipeline import CHECKPOINT_ERROR
    from tests.test_billing import _database_url, _free_port, _wait_http

    world.route(world.provider(fake))
    user = world.user("killed-streams", balance=10**9)
    key = world.key(user)
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "DB_POOL_MAX": "0",
        "RELAY_CHECKPOINT_MS": "20",
    }
    root = Path(__file__).resolve().parent.parent
    master = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "gateway_project.asgi:application", "--workers", "1",
         "--bind", f"127.0.0.1:{port}"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    short = {"chunk_delay": 0.01, "reply": " ".join(["short"] * 20)}
    long = {"chunk_delay": 0.04, "reply": " ".join(["long"] * 1000)}  # 40 s: cut by the kill
    ids: dict[str, str] = {}
    lock = threading.Lock()

    def stream(kind: str) -> None:
        directive = orjson.dumps(short if kind == "short" else long).decode()
        body = {
            "model": "gpt-4o-mini",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"[[fake:{directive}]] go"}],
        }
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        headers = {"authorization": f"Bearer {key}"}
        with (
            contextlib.suppress(httpx.HTTPError),
            httpx.stream("POST", url, json=body, headers=headers, timeout=60) as response,
        ):
            with lock:
                ids[response.headers["x-request-id"]] = kind
            for _ in response.iter_bytes():
                pass

    try:
        _wait_http(f"http://127.0.0.1:{port}/health")
        threads = [threading.Thread(target=stream, args=("short",)) for _ in range(8)]
        threads += [threading.Thread(target=stream, args=("long",)) for _ in range(12)]
        for thread in threads:
            thread.start()
        # the short ones ended, the long ones are about 300 tokens in: what a checkpoint
        # misses (the last RELAY_CHECKPOINT_MS, a chunk in the dead worker's socket buffer)
        # is then well under 1 %
        time.sleep(12)
        worker = int(Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()[0])
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        master.send_signal(signal.SIGKILL)
        master.wait(timeout=10)
    assert sorted(ids.values()) == ["long"] * 12 + ["short"] * 8

    store = get_store()
    logs = {}
    while time.monotonic() - killed < 30:
        store.release_expired()  # as Celery beat does every 10 s
        settle_usage()
        logs = {log.request_id: log for log in UsageLog.objects.filter(request_id__in=list(ids))}
        if len(logs) == len(ids):
            break
        time.sleep(1)
    assert set(logs) == set(ids)
    produced = sum(
        r["chunks_sent"] for r in fake.requests if r["json"]["messages"][0]["content"].count("long") > 10
    )
    cut = [logs[rid] for rid, kind in ids.items() if kind == "long"]
    billed = sum(log.completion_tokens for log in cut)
    assert {log.error for log in cut} == {CHECKPOINT_ERROR}
    assert produced > 12 * 200
    assert billed >= 0.99 * produced, (billed, produced)
    assert billed <= produced
    assert all(
        logs[rid].completion_tokens == 20 and logs[rid].status_code == 200
        for rid, kind in ids.items()
        if kind == "short"
    )
    # each request charged once, and nothing stays held in Redis for any of them
    charges = BillingRecord.objects.filter(user=user, kind="usage")
    assert sorted(charges.values_list("request_id", flat=True)) == sorted(ids)
    user.refresh_from_db()
    assert user.balance == 10**9 - sum(log.cost for log in logs.values())
    assert store.snapshot_user(user.id).get("held", 0) == 0
