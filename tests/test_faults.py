"""Real faults, injected for real: PostgreSQL is stopped, started and restarted under a
running gateway (docs/failure-policy.md lists the rows these tests cover).

They need the server that ``scripts/with-services.sh`` (``make test-full``) starts, which
exports ``GATEWAY_TEST_PG_CTL`` (the pg_ctl command for that server); anywhere else they
are skipped. Every test brings PostgreSQL back in a ``finally`` so the rest of the suite
keeps its database.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from contextlib import contextmanager

import httpx
import pytest
from django.conf import settings
from django.db import connection

from relay.config import bump_version

PG_CTL = shlex.split(os.environ.get("GATEWAY_TEST_PG_CTL", ""))
PASSWORD = "correct horse battery staple"  # tests.factories.UserFactory's

pytestmark = [
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
        reason="database fault injection needs PostgreSQL (make test-full)",
    ),
    pytest.mark.skipif(
        not PG_CTL,
        reason="GATEWAY_TEST_PG_CTL is unset: run under scripts/with-services.sh (make test-full)",
    ),
]


# --- controlling the server -------------------------------------------------------------------


def pg_ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PG_CTL, *args], capture_output=True, text=True, timeout=60)


def start_postgres() -> None:
    """Start the server unless it runs; ``-w`` returns once it accepts connections. The
    test process's own connection died with the old server: drop it."""
    if pg_ctl("status").returncode != 0:
        done = pg_ctl("start")
        assert done.returncode == 0, done.stdout + done.stderr
    connection.close()


def stop_postgres() -> None:
    """A fast shutdown: every session is cut, as in a crash or failover."""
    done = pg_ctl("stop", "-m", "fast")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(autouse=True)
def _postgres_back(gateway):
    """Whatever happened, the next tests get a running server and a pool without the
    connections that died (torn down before the gateway fixture flushes the database)."""
    yield
    start_postgres()
    pool = getattr(connection, "pool", None)
    if pool is not None:
        pool.check()


@contextmanager
def postgres_down():
    stop_postgres()
    try:
        yield
    finally:
        start_postgres()


# --- requests ----------------------------------------------------------------------------------

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
MESSAGES = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}


def chat(gateway, key: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def messages(gateway, key: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/messages", json=MESSAGES, headers={"x-api-key": key}, timeout=30)


def login(gateway, username: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/auth/login", json={"username": username, "password": PASSWORD}, timeout=30
    )


def timed(call, *args, **kwargs) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call(*args, **kwargs)
    return response, time.monotonic() - started


def until_ok(call, *args, deadline: float) -> httpx.Response:
    """Repeat ``call`` until it answers 200 or ``deadline`` (monotonic) passes."""
    while True:
        response = call(*args)
        if response.status_code == 200 or time.monotonic() >= deadline:
            return response
        time.sleep(0.1)


def setup_world(world, fake):
    world.route(world.provider(fake))
    return world.user("alice")


# --- PostgreSQL restarted -----------------------------------------------------------------------

RECOVERY = 5.0  # seconds after the database is back within which everything must be served


def test_postgres_restart_new_and_reloaded_keys_are_served(gateway, world, fake):
    """After a restart every connection the gateway had is dead: loads must retire them and
    reconnect by themselves, not answer 500 'the connection is closed' until the gateway
    restarts."""
    user = setup_world(world, fake)
    old_key = world.key(user)
    assert chat(gateway, old_key).status_code == 200  # warm: loaded and cached

    try:
        stop_postgres()
    finally:
        start_postgres()
    back = time.monotonic()

    bump_version()  # every entry is dropped, as after a config change or the cache TTL
    for call in (chat, messages):
        response = until_ok(call, gateway, old_key, deadline=back + RECOVERY)
        assert response.status_code == 200, response.text

    new_key = world.key(user)  # created after the restart: in no cache
    response = until_ok(chat, gateway, new_key, deadline=back + RECOVERY)
    assert response.status_code == 200, response.text
    assert login(gateway, user.username).status_code == 200
    assert time.monotonic() - back < RECOVERY


# --- PostgreSQL stopped -------------------------------------------------------------------------


def test_postgres_down_cold_keys_get_503_then_recover(gateway, world, fake):
    """During the outage a warm key is served from the cache; what needs the database gets
    503 with Retry-After in the endpoint's own shape within the connect timeout; once the
    server is back the same requests succeed without restarting anything."""
    user = setup_world(world, fake)
    warm_key = world.key(user)
    cold_key = world.key(user)
    assert chat(gateway, warm_key).status_code == 200
    bound = getattr(settings, "DB_CONNECT_TIMEOUT", 5) + 2.0

    with postgres_down():
        assert chat(gateway, warm_key).status_code == 200  # the cache serves it

        response, elapsed = timed(chat, gateway, cold_key)
        assert response.status_code == 503, response.text
        assert elapsed < bound, f"answered after {elapsed:.1f} s"
        assert response.headers["retry-after"] == "5"
        error = response.json()["error"]
        assert error["type"] == "api_error"
        assert "database is unavailable" in error["message"]

        response, elapsed = timed(messages, gateway, cold_key)
        assert response.status_code == 503, response.text
        assert elapsed < bound, f"answered after {elapsed:.1f} s"
        assert response.headers["retry-after"] == "5"
        body = response.json()
        assert body["type"] == "error" and body["error"]["type"] == "api_error"
        assert "database is unavailable" in body["error"]["message"]

        # an unknown key cannot be told from a cold one without the database: 503, not 401
        response = chat(gateway, "sk-gw-not-a-key")
        assert response.status_code == 503, response.text

        response, elapsed = timed(login, gateway, user.username)
        assert response.status_code == 503, response.text
        assert elapsed < bound, f"answered after {elapsed:.1f} s"
        assert response.headers["retry-after"] == "5"
        assert response.headers["content-type"] == "application/json"
        assert "database is unavailable" in response.json()["detail"]

        response, elapsed = timed(httpx.get, f"{gateway.url}/health/ready", timeout=30)
        assert response.status_code == 503, response.text
        assert response.json()["failed"] == ["database"]
        assert elapsed < bound, f"answered after {elapsed:.1f} s"

    back = time.monotonic()
    for call in (chat, messages):
        response = until_ok(call, gateway, cold_key, deadline=back + RECOVERY)
        assert response.status_code == 200, response.text
    response = until_ok(login, gateway, user.username, deadline=back + RECOVERY)
    assert response.status_code == 200, response.text
    assert httpx.get(f"{gateway.url}/health/ready").status_code == 200
