"""Reads on providers, models and routes. Credentials are never read here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, timedelta

from django.db.models import Avg, Count, Q, QuerySet
from django.db.models.functions import TruncHour
from django.utils import timezone

from .models import Model, Provider, ProviderModel


def provider_list(*, filters: dict | None = None) -> QuerySet[Provider]:
    filters = filters or {}
    providers = Provider.objects.all()
    for name in ("type", "status", "health_status"):
        if filters.get(name):
            providers = providers.filter(**{name: filters[name]})
    if filters.get("search"):
        term = filters["search"]
        providers = providers.filter(Q(name__icontains=term) | Q(base_url__icontains=term))
    return providers.order_by(filters.get("ordering") or "-priority", "name", "id")


def provider_get(*, provider_id: int) -> Provider | None:
    return Provider.objects.filter(pk=provider_id).first()


def model_list(*, filters: dict | None = None) -> QuerySet[Model]:
    filters = filters or {}
    models = Model.objects.all()
    for name in ("type", "status"):
        if filters.get(name):
            models = models.filter(**{name: filters[name]})
    if filters.get("search"):
        term = filters["search"]
        models = models.filter(Q(slug__icontains=term) | Q(display_name__icontains=term))
    return models.order_by(filters.get("ordering") or "slug", "id")


def model_get(*, model_id: int) -> Model | None:
    return Model.objects.filter(pk=model_id).first()


def route_list(*, filters: dict | None = None) -> QuerySet[ProviderModel]:
    filters = filters or {}
    routes = ProviderModel.objects.select_related("provider", "model")
    if filters.get("provider"):
        routes = routes.filter(provider_id=filters["provider"])
    if filters.get("model"):
        routes = routes.filter(model_id=filters["model"])
    if filters.get("enabled") is not None:
        routes = routes.filter(enabled=filters["enabled"])
    return routes.order_by(filters.get("ordering") or "model__slug", "-priority", "id")


def route_get(*, route_id: int) -> ProviderModel | None:
    return ProviderModel.objects.select_related("provider", "model").filter(pk=route_id).first()


@dataclass(slots=True)
class HourActivity:
    requests: int = 0  # requests the provider answered
    errors: int = 0  # failed attempts on it (failovers included) and answers that failed
    latency_ms: float | None = None  # mean latency of the requests it answered


ERROR_ROWS_CAP = 50_000  # failed or failed-over requests read per page view at most


def provider_hourly_activity(*, provider_ids: list[int], hours: int = 24) -> dict[int, list[HourActivity]]:
    """Per provider, ``hours`` hourly buckets ending with the current hour (oldest first),
    from the usage logs: what it answered (count, mean latency), and its errors, read from
    each request's attempts (a provider that fails every attempt answers nothing)."""
    from billing.models import UsageLog

    now = timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    activity = {pid: [HourActivity() for _ in range(hours)] for pid in provider_ids}
    if not provider_ids:
        return activity

    def bucket(when) -> int:
        return int((when - start).total_seconds() // 3600)

    answered = (
        UsageLog.objects.filter(created_at__gte=start, provider_id__in=provider_ids)
        .annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values("provider_id", "hour")
        .annotate(requests=Count("id"), latency=Avg("latency_ms"))
    )
    for row in answered:
        index = bucket(row["hour"])
        if 0 <= index < hours:
            slot = activity[row["provider_id"]][index]
            slot.requests = row["requests"]
            slot.latency_ms = row["latency"]
    wanted = set(provider_ids)
    failed = (
        UsageLog.objects.filter(created_at__gte=start)
        .filter(Q(status_code__gte=400) | Q(providers_tried__1__isnull=False))
        .order_by("-created_at")
        .values_list("created_at", "provider_id", "status_code", "providers_tried")[:ERROR_ROWS_CAP]
    )
    for created_at, answered_by, status, tried in failed:
        index = bucket(created_at)
        if not 0 <= index < hours:
            continue
        for attempt in tried if isinstance(tried, list) else ():
            pid = attempt.get("provider") if isinstance(attempt, dict) else None
            if pid in wanted and (attempt.get("status") or 0) >= 400:
                activity[pid][index].errors += 1
        if answered_by in wanted and status >= 500 and status != 499:
            activity[answered_by][index].errors += 1  # answered, then the answer failed
    return activity
