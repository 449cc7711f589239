"""Read-only selectors for usage reports (the relay's /v1/usage and billing routes, and
the operator dashboard). Built on the daily roll-ups, which survive log retention."""

from __future__ import annotations

from datetime import date, timedelta

from django.db.models import Avg, Count, Q, Sum
from django.utils import timezone

from core.money import decimal_str, format_money

from .models import DailyUsage, UsageLog

_SUMS = {
    "requests": Sum("requests"),
    "errors": Sum("errors"),
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "cached_tokens": Sum("cached_tokens"),
    "cost": Sum("cost"),
}


def _clean(row: dict) -> dict:
    return {name: int(row.get(name) or 0) for name in _SUMS}


def key_usage(*, key_id: int, start: date, end: date) -> dict:
    """Requests, tokens and cost of one key between two days (inclusive), per model."""
    rows = DailyUsage.objects.filter(api_key_id=key_id, day__gte=start, day__lte=end)
    per_model = [
        {"model": row["model"], **_clean(row)}
        for row in rows.values("model").annotate(**_SUMS).order_by("model")
    ]
    total = _clean(rows.aggregate(**_SUMS))
    for item in [total, *per_model]:
        item["cost"] = decimal_str(item["cost"])
    return {"total": total, "data": per_model}


def key_cost_between(*, key_id: int, start: date, end: date) -> int:
    return int(
        DailyUsage.objects.filter(api_key_id=key_id, day__gte=start, day__lte=end).aggregate(c=Sum("cost"))[
            "c"
        ]
        or 0
    )


def dashboard(*, days: int = 30) -> dict:
    """The operator dashboard: per day and per model totals, top users, providers."""
    today = timezone.now().date()
    since = today - timedelta(days=days - 1)
    rollups = DailyUsage.objects.filter(day__gte=since)
    per_day = {row["day"]: _clean(row) for row in rollups.values("day").annotate(**_SUMS)}
    series = [{"day": since + timedelta(days=i), **per_day.get(since + timedelta(days=i), _clean({}))}
              for i in range(days)]  # fmt: skip
    per_model = [
        {"model": row["model"], **_clean(row)}
        for row in rollups.values("model").annotate(**_SUMS).order_by("-cost", "model")[:20]
    ]
    top_users = [
        {"user_id": row["user_id"], "username": row["user__username"], **_clean(row)}
        for row in rollups.exclude(user_id=None)
        .values("user_id", "user__username")
        .annotate(**_SUMS)
        .order_by("-cost")[:10]
    ]
    recent = UsageLog.objects.filter(created_at__gte=timezone.now() - timedelta(days=1)).exclude(
        provider_id=None
    )
    providers = [
        {
            "provider_id": row["provider_id"],
            "name": row["provider__name"],
            "requests": row["requests"],
            "errors": row["errors"],
            "error_rate": (row["errors"] / row["requests"]) if row["requests"] else 0.0,
            "avg_latency_ms": round(row["latency"] or 0),
            "avg_ttft_ms": round(row["ttft"] or 0),
        }
        for row in recent.values("provider_id", "provider__name")
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=Q(status_code__gte=400)),
            latency=Avg("latency_ms"),
            ttft=Avg("ttft_ms"),
        )
        .order_by("-requests")
    ]
    for row in per_model + top_users:
        row["cost_display"] = format_money(row["cost"])
    return {"since": since, "until": today, "series": series, "per_model": per_model, "top_users": top_users,
            "providers": providers}  # fmt: skip
