"""``GET /metrics``: the Prometheus text format, for a scraper holding ``METRICS_TOKEN`` or
connecting from ``METRICS_ALLOWED_NETWORKS`` (refused when neither is configured)."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from core.web import client_ip

from .settlement import usage_queue_state

logger = logging.getLogger(__name__)


class SettlementCollector:
    """Read at scrape time: the usage queue is shared (Redis) or this process's own."""

    def collect(self):
        try:
            state = usage_queue_state()
        except Exception as exc:  # Redis away: the scrape still shows the workers' metrics
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("metrics: usage queue not readable", extra={"error": error})
            return
        yield GaugeMetricFamily(
            "gateway_usage_queue_depth", "Usage events waiting for settlement.", value=state.backlog
        )
        yield GaugeMetricFamily(
            "gateway_settlement_lag_seconds",
            "How long the oldest usage event waiting for settlement has waited (0: none waits).",
            value=state.oldest_wait,
        )
        if state.last_run_age is not None:
            yield GaugeMetricFamily(
                "gateway_settlement_last_run_age_seconds",
                "Seconds since a settlement run last finished.",
                value=state.last_run_age,
            )


def _allowed(request) -> tuple[bool, int, str]:
    token = settings.METRICS_TOKEN
    networks = settings.METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        return False, 403, "Metrics are off: set METRICS_TOKEN or METRICS_ALLOWED_NETWORKS."
    if token:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True, 200, ""
    if networks:
        try:
            address = ipaddress.ip_address(client_ip(request.META))
        except ValueError:
            address = None
        if address is not None and any(address in network for network in networks):
            return True, 200, ""
    if token:
        return False, 401, "Send the metrics token as 'Authorization: Bearer <METRICS_TOKEN>'."
    return False, 403, "This address may not read the metrics (METRICS_ALLOWED_NETWORKS)."


@require_GET
def metrics(request):
    allowed, status, message = _allowed(request)
    if not allowed:
        response = JsonResponse({"detail": message}, status=status)
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SettlementCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # every worker's values, from their files
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY) + generate_latest(registry)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
