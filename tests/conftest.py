"""Shared fixtures. The suite runs on SQLite + in-process stores by default and on
PostgreSQL + Redis when DATABASE_URL / REDIS_URL are set (make test-full)."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.conf import settings

from tests import factories


def pytest_report_header(config):
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    return f"gateway stores: database={engine}, redis={'yes' if settings.REDIS_URL else 'no (in-process)'}"


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def user(db):
    return factories.UserFactory()


@pytest.fixture
def staff(db):
    return factories.UserFactory(username="operator", is_staff=True, is_superuser=True)


# --- relay end-to-end fixtures ----------------------------------------------------------

import socket  # noqa: E402
import threading  # noqa: E402

from tests.fakes.upstream import FakeUpstream  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GatewayServer:
    """The real ASGI app under uvicorn, in a thread of the test process (so it shares the
    test database), on a free loopback port."""

    def __init__(self) -> None:
        import uvicorn

        from gateway_project.asgi import application

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        from gateway_project.workers import SERVER_OPTIONS

        config = uvicorn.Config(
            application,
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            log_level="warning",
            access_log=False,
            **SERVER_OPTIONS,  # as in production: the app alone decides about X-Forwarded-For
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="gateway-server", daemon=True)

    def start(self) -> GatewayServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the gateway server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session", autouse=True)
def _no_in_process_jobs():
    """The embedded default probes providers and purges logs in process (relay.app); in the
    suite a probe would consume a fake upstream's scripted answer, so those jobs run only
    in the tests that turn them on (interval > 0)."""
    schedule = settings.CELERY_BEAT_SCHEDULE
    saved = {
        name: dict(schedule[name])
        for name in (
            "check-providers",
            "purge-usage-logs",
            "purge-responses",
            "poll-midjourney",
        )
    }
    for name in saved:
        schedule[name] = {**schedule[name], "schedule": 0}
    yield
    schedule.update(saved)


@pytest.fixture(scope="session")
def gateway_server(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        server = GatewayServer().start()
    yield server
    server.stop()
    with django_db_blocker.unblock():
        from django.db import connection

        if connection.vendor == "postgresql":
            # the server's worker threads kept connections; end them so the test
            # database can be dropped
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


@pytest.fixture(scope="session")
def _fake_session():
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="session")
def _fake_session_b():
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(_fake_session):
    _fake_session.reset()
    yield _fake_session
    _fake_session.reset()


@pytest.fixture
def fake_b(_fake_session_b):
    _fake_session_b.reset()
    yield _fake_session_b
    _fake_session_b.reset()


def _reset_relay_state() -> None:
    from gateway_project.asgi import relay_app
    from quotas.counters import reset_store
    from relay.config import bump_version
    from relay.routing import ROUTER

    bump_version()
    ROUTER.reset()
    relay_app.blocked.clear()
    reset_store()
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        client.flushdb()
        client.close()


@pytest.fixture
def gateway(gateway_server, transactional_db):
    """A running gateway with empty relay state; data written by the test is committed
    (transactional_db), so the server thread sees it."""
    _reset_relay_state()
    yield gateway_server
    _drain_usage()
    _reset_relay_state()


def _drain_usage(timeout: float = 5.0) -> None:
    """Let the server settle what it has queued before the test's data is flushed."""
    from gateway_project.asgi import relay_app

    deadline = time.monotonic() + timeout
    queue = relay_app.usage
    store = relay_app.store
    if store is not None and store.remote and relay_app.loop is not None and relay_app.loop.is_running():
        # unused leases go back to Redis, as at shutdown, so held amounts are exact again

        async def release() -> None:
            store.release_idle(0.0)

        asyncio.run_coroutine_threadsafe(release(), relay_app.loop).result(timeout)
    while queue is not None and time.monotonic() < deadline:
        finished = store is None or not store.remote or not store.busy()  # flush to Redis pending
        if finished and not queue.buffer and (queue.flusher is None or queue.flusher.done()):
            break
        time.sleep(0.02)
    settle_usage()


class World:
    """Builds providers, models, prices, users and keys for relay tests."""

    def __init__(self) -> None:
        self.users = {}

    def user(self, username: str = "alice", **fields):
        return factories.UserFactory(username=username, **fields)

    def key(self, user=None, **fields) -> str:
        from keys.services import api_key_create

        return api_key_create(user=user or self.user(), **fields).plain

    def provider(self, fake_or_url, *, name=None, type="openai", api_key="", **fields):
        from providers.services import provider_create

        url = fake_or_url if isinstance(fake_or_url, str) else fake_or_url.url
        base = {
            "openai": "/v1",
            "openai-compatible": "/v1",
            "anthropic": "/v1",
            "gemini": "/v1beta",
            "azure": "",
            "midjourney": "",
        }
        return provider_create(
            name=name or f"p-{type}-{url.rsplit(':', 1)[-1]}-{time.monotonic_ns()}",
            type=type,
            base_url=url + base[type],
            api_key=api_key,
            **fields,
        )

    def route(self, provider, model="gpt-4o-mini", **fields):
        from core.money import to_nanos
        from providers.models import ProviderModel

        model_row = factories.ModelFactory(slug=model)
        if not model_row.prices.exists():
            factories.PriceFactory(
                model=model_row,
                input_per_1m=to_nanos("1"),
                output_per_1m=to_nanos("2"),
                cached_input_per_1m=to_nanos("0.5"),
            )
        return ProviderModel.objects.create(provider=provider, model=model_row, **fields)


@pytest.fixture
def world(gateway):
    return World()


def settle_usage() -> None:
    """Settle queued usage now (Redis: run the Celery task's function; in-process: the
    relay settles by itself within tens of milliseconds)."""
    if settings.REDIS_URL:
        from billing.tasks import settle_from_redis

        settle_from_redis()


def wait_usage(request_id: str, timeout: float = 5.0):
    from billing.models import UsageLog

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        settle_usage()
        log = UsageLog.objects.filter(request_id=request_id).first()
        if log is not None:
            return log
        time.sleep(0.05)
    raise AssertionError(f"no usage log for request {request_id} within {timeout} s")


@pytest.fixture(autouse=True)
def _fresh_counter_store():
    """Every test starts with an empty in-process counter store (Redis is flushed by the
    relay fixtures)."""
    from quotas.counters import reset_store

    reset_store()
    yield


@pytest.fixture(scope="session", autouse=True)
def _remove_sqlite_sidecars():
    """SQLite in WAL mode leaves ``-wal``/``-shm`` files beside the test database it dropped."""
    yield
    import contextlib
    import os

    name = settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") and name and name != ":memory:":
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{name}{suffix}")
