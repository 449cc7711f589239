"""Reads on usage logs, the ledger, prices, redemption codes and balances.

Pass ``user`` to restrict a read to one user's rows (self-service); staff reads filter by
``filters["user"]`` instead.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from django.conf import settings
from django.db.models import F, Q, QuerySet, Sum
from django.utils import timezone

from billing.pricing import PPM, multiplier_ppm

from .models import BillingRecord, DailyUsage, ModelPrice, RedemptionCode, UsageLog


def _time_range(queryset: QuerySet, filters: dict, field: str = "created_at") -> QuerySet:
    if filters.get("start"):
        queryset = queryset.filter(**{f"{field}__gte": filters["start"]})
    if filters.get("end"):
        queryset = queryset.filter(**{f"{field}__lt": filters["end"]})
    return queryset


def usage_log_list(*, user=None, filters: dict | None = None) -> QuerySet[UsageLog]:
    filters = filters or {}
    logs = UsageLog.objects.all()
    if user is not None:
        logs = logs.filter(user=user)
    if filters.get("user"):
        logs = logs.filter(user_id=filters["user"])
    if filters.get("api_key"):
        logs = logs.filter(api_key_id=filters["api_key"])
    if filters.get("provider"):
        logs = logs.filter(provider_id=filters["provider"])
    if filters.get("model"):
        logs = logs.filter(Q(model_requested=filters["model"]) | Q(model_billed=filters["model"]))
    if filters.get("status") == "success":
        logs = logs.filter(status_code__lt=400)
    elif filters.get("status") == "error":
        logs = logs.filter(status_code__gte=400)
    if filters.get("status_code"):
        logs = logs.filter(status_code=filters["status_code"])
    if filters.get("request_id"):
        logs = logs.filter(request_id=filters["request_id"])
    logs = _time_range(logs, filters)
    return logs.order_by(filters.get("ordering") or "-created_at", "-id")


def _rollup_sums() -> dict:
    return {name: Sum(name) for name in ("requests", "errors", "prompt_tokens", "completion_tokens", "cost")}


def usage_daily(*, user, days: int = 30, today: date | None = None) -> list[dict]:
    """Requests, tokens and cost per day over the last ``days`` days (the daily roll-ups,
    which outlive usage-log retention); days without traffic are zeros."""
    today = today or timezone.localdate()
    first = today - timedelta(days=days - 1)
    rows = (
        DailyUsage.objects.filter(user=user, day__gte=first, day__lte=today)
        .values("day")
        .annotate(**_rollup_sums())
    )
    by_day = {row["day"]: row for row in rows}
    result = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        row = by_day.get(day, {})
        result.append(
            {
                "day": day,
                "requests": row.get("requests") or 0,
                "errors": row.get("errors") or 0,
                "prompt_tokens": row.get("prompt_tokens") or 0,
                "completion_tokens": row.get("completion_tokens") or 0,
                "cost": row.get("cost") or 0,
            }
        )
    return result


def ledger_list(*, user=None, filters: dict | None = None) -> QuerySet[BillingRecord]:
    filters = filters or {}
    records = BillingRecord.objects.all()
    if user is not None:
        records = records.filter(user=user)
    if filters.get("user"):
        records = records.filter(user_id=filters["user"])
    if filters.get("kind"):
        records = records.filter(kind=filters["kind"])
    if filters.get("api_key"):
        records = records.filter(api_key_id=filters["api_key"])
    records = _time_range(records, filters)
    return records.order_by(filters.get("ordering") or "-created_at", "-id")


def quota_status_of_account(*, user) -> list[dict]:
    """The user's quotas and those of the user's keys (not revoked), each with its use in the
    current period; ``scope`` is "user" or "key" and ``api_key`` the key's id."""
    from keys.models import APIKey
    from quotas.models import Quota
    from quotas.selectors import quota_status_for

    rows = [{**row, "scope": "user", "api_key": None} for row in quota_status_for(user=user)]
    keys = (
        APIKey.objects.filter(user=user, quotas__status=Quota.Status.ACTIVE)
        .exclude(status=APIKey.Status.REVOKED)
        .distinct()
        .order_by("id")
    )
    for key in keys:
        rows += [{**row, "scope": "key", "api_key": key.pk} for row in quota_status_for(api_key=key)]
    return rows


def balance_of(*, user) -> dict:
    """Balance, credit limit and what can still be spent (balance + credit limit)."""
    return {
        "balance": user.balance,
        "credit_limit": user.credit_limit,
        "available": user.balance + user.credit_limit,
        "currency": settings.BILLING_CURRENCY,
    }


# --- prices -----------------------------------------------------------------------------------


def _in_force(now: datetime) -> Q:
    return Q(effective_from__lte=now) & (Q(effective_until__isnull=True) | Q(effective_until__gt=now))


def model_price_list(*, filters: dict | None = None) -> QuerySet[ModelPrice]:
    filters = filters or {}
    prices = ModelPrice.objects.select_related("model")
    if filters.get("model"):
        prices = prices.filter(model_id=filters["model"])
    if filters.get("in_force"):
        prices = prices.filter(_in_force(timezone.now()))
    return prices.order_by(filters.get("ordering") or "-effective_from", "-id")


def model_price_get(*, price_id: int) -> ModelPrice | None:
    return ModelPrice.objects.select_related("model").filter(pk=price_id).first()


def model_price_billed(*, price: ModelPrice) -> bool:
    """Whether requests were billed with this version (then its amounts are history)."""
    return price.pk is not None and UsageLog.objects.filter(price_id=price.pk).exists()


def prices_in_force(*, model_ids, now: datetime | None = None) -> dict[int, ModelPrice]:
    """The price version in force now per model (latest ``effective_from``), as the relay
    picks it."""
    now = now or timezone.now()
    result: dict[int, ModelPrice] = {}
    rows = ModelPrice.objects.filter(_in_force(now), model_id__in=list(model_ids))
    for price in rows.order_by("model_id", "-effective_from", "-id"):
        result.setdefault(price.model_id, price)
    return result


def _times(nanos: int, ppm: int) -> int:
    return -(-nanos * ppm // PPM)  # rounded up to a whole nano, as billing rounds


def model_catalog_for(*, user) -> list[dict]:
    """The models ``user`` can call (not disabled, at least one enabled route on an enabled
    provider) with the prices in force after the user's group multiplier."""
    from providers.models import Model, Provider

    models = list(
        Model.objects.exclude(status=Model.Status.DISABLED)
        .filter(routes__enabled=True, routes__provider__status=Provider.Status.ENABLED)
        .distinct()
        .order_by("slug")
    )
    prices = prices_in_force(model_ids=[m.pk for m in models])
    group = user.group if user.group_id else None
    ppm = multiplier_ppm(group.multiplier if group else None)
    catalog = []
    for model in models:
        price = prices.get(model.pk)
        catalog.append(
            {
                "model": model,
                "multiplier": group.multiplier if group else None,
                "price": None
                if price is None
                else {
                    "input_per_1m": _times(price.input_per_1m, ppm),
                    "output_per_1m": _times(price.output_per_1m, ppm),
                    "cached_input_per_1m": _times(price.cached_input_per_1m, ppm),
                    "per_request": _times(price.per_request, ppm),
                    "currency": price.currency,
                },
            }
        )
    return catalog


# --- redemption codes -------------------------------------------------------------------------


def redemption_code_list(*, filters: dict | None = None) -> QuerySet[RedemptionCode]:
    filters = filters or {}
    codes = RedemptionCode.objects.all()
    if filters.get("status"):
        codes = codes.filter(status=filters["status"])
    if filters.get("batch"):
        codes = codes.filter(batch=filters["batch"])
    if filters.get("redeemed_by"):
        codes = codes.filter(redeemed_by_id=filters["redeemed_by"])
    return codes.order_by(filters.get("ordering") or "-created_at", "-id")


def redemption_code_get(*, code_id: int) -> RedemptionCode | None:
    return RedemptionCode.objects.filter(pk=code_id).first()


SERIES_SPANS = {"day": 30, "hour": 48}  # buckets shown per period


def usage_series(
    *, period: str, user=None, filters: dict | None = None, now: datetime | None = None
) -> list[dict]:
    """Requests, errors, tokens and cost per day (the last 30, today included) or per hour
    (the last 48, this one included) in the current time zone, from the usage logs matching
    ``filters`` (user, api_key, model, provider, as ``usage_log_list``); empty buckets are zeros."""
    from django.db.models import Count
    from django.db.models.functions import TruncDay, TruncHour

    span = SERIES_SPANS[period]
    now = timezone.localtime(now or timezone.now())
    if period == "day":
        last = now.replace(hour=0, minute=0, second=0, microsecond=0)
        starts = [last - timedelta(days=span - 1 - i) for i in range(span)]
        starts = [timezone.make_aware(datetime.combine(s.date(), datetime.min.time())) for s in starts]
        trunc = TruncDay("created_at", tzinfo=timezone.get_current_timezone())
    else:
        last = now.replace(minute=0, second=0, microsecond=0)
        starts = [last - timedelta(hours=span - 1 - i) for i in range(span)]
        trunc = TruncHour("created_at", tzinfo=timezone.get_current_timezone())
    filters = filters or {}
    if period == "day" and not filters.get("provider"):
        rollups = DailyUsage.objects.filter(day__gte=starts[0].date(), day__lte=starts[-1].date())
        for name, lookup in (("user", "user_id"), ("api_key", "api_key_id"), ("model", "model")):
            if filters.get(name):
                rollups = rollups.filter(**{lookup: filters[name]})
        if user is not None:
            rollups = rollups.filter(user=user)
        rows = rollups.values(bucket=F("day")).annotate(**_rollup_sums())
        found = {row["bucket"]: row for row in rows}
        return [_series_row(start, found.get(start.date(), {})) for start in starts]
    query = {**filters, "start": starts[0], "end": None}
    rows = (
        usage_log_list(user=user, filters=query)
        .annotate(bucket=trunc)
        .values("bucket")
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=Q(status_code__gte=400)),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cost=Sum("cost"),
        )
        .order_by("bucket")
    )
    found = {timezone.localtime(row["bucket"]).replace(tzinfo=None): row for row in rows}
    return [
        _series_row(start, found.get(timezone.localtime(start).replace(tzinfo=None), {})) for start in starts
    ]


def _series_row(start: datetime, row: dict) -> dict:
    prompt, completion = row.get("prompt_tokens") or 0, row.get("completion_tokens") or 0
    return {
        "start": start,
        "requests": row.get("requests") or 0,
        "errors": row.get("errors") or 0,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "tokens": prompt + completion,
        "cost": row.get("cost") or 0,
    }
