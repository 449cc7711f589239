"""Liveness (the process answers) and readiness (its database and Redis answer, and with
Redis, settlement keeps up with the usage queue)."""

from __future__ import annotations

import logging
import time

import orjson
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)


@require_GET
def health(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_redis() -> None:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


class SettlementBehind(Exception):
    pass


def _check_settlement() -> str:
    """Usage waiting in Redis while no settlement run finished for SETTLEMENT_STALE_SECONDS:
    no Celery worker or beat is running, and nobody's usage reaches the ledger."""
    import redis

    from billing.events import PROCESSING_KEY, QUEUE_KEY, SETTLED_AT_KEY

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        backlog = client.llen(QUEUE_KEY) + client.llen(PROCESSING_KEY)
        settled_at = client.get(SETTLED_AT_KEY)
        oldest = client.lindex(PROCESSING_KEY, 0) or client.lindex(QUEUE_KEY, 0)
    finally:
        client.close()
    now = time.time()
    age = now - float(settled_at) if settled_at else None
    try:
        waited = now - float(orjson.loads(oldest)["ts"]) if oldest else 0.0
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        waited = 0.0
    summary = f"backlog {backlog}, last run {'never' if age is None else f'{int(age)} s ago'}"
    stale = settings.SETTLEMENT_STALE_SECONDS
    if backlog and waited > stale and (age is None or age > stale):
        raise SettlementBehind(f"{summary}, oldest waiting {int(waited)} s")
    return summary


@require_GET
def ready(request):
    checks = {"database": _check_database}
    if settings.REDIS_URL:
        checks["redis"] = _check_redis
        checks["settlement"] = _check_settlement
    results: dict[str, str] = {}
    failed: list[str] = []
    for name, check in checks.items():
        if name == "settlement" and "redis" in failed:
            results[name] = "not checked: redis failed"
            continue
        try:
            detail = check()
        except SettlementBehind as exc:
            logger.warning("readiness check failed", extra={"check": name, "error": str(exc)})
            results[name] = f"behind: {exc}"
            failed.append(name)
        except Exception as exc:  # any failure means "not ready"; say which and why
            logger.warning("readiness check failed", extra={"check": name, "error": str(exc)[:200]})
            results[name] = f"error: {type(exc).__name__}"
            failed.append(name)
        else:
            results[name] = f"ok ({detail})" if detail else "ok"
    if failed:
        return JsonResponse({"status": "unavailable", "failed": failed, "checks": results}, status=503)
    return JsonResponse({"status": "ok", "checks": results})
