"""Liveness (the process answers) and readiness (its database and Redis answer)."""

from __future__ import annotations

import logging

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


@require_GET
def ready(request):
    checks = {"database": _check_database}
    if settings.REDIS_URL:
        checks["redis"] = _check_redis
    results: dict[str, str] = {}
    failed: list[str] = []
    for name, check in checks.items():
        try:
            check()
        except Exception as exc:  # any failure means "not ready"; say which and why
            logger.warning("readiness check failed", extra={"check": name, "error": str(exc)[:200]})
            results[name] = f"error: {type(exc).__name__}"
            failed.append(name)
        else:
            results[name] = "ok"
    if failed:
        return JsonResponse({"status": "unavailable", "failed": failed, "checks": results}, status=503)
    return JsonResponse({"status": "ok", "checks": results})
