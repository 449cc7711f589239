"""Liveness (the process answers) and readiness (its database and Redis answer, and with
Redis, settlement keeps up with the usage queue)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from observability.settlement import usage_queue_state

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
    state = usage_queue_state()
    age = state.last_run_age
    summary = f"backlog {state.backlog}, last run {'never' if age is None else f'{int(age)} s ago'}"
    stale = settings.SETTLEMENT_STALE_SECONDS
    if state.backlog and state.oldest_wait > stale and (age is None or age > stale):
        raise SettlementBehind(f"{summary}, oldest waiting {int(state.oldest_wait)} s")
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
