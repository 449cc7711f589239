"""Reads on quotas."""

from __future__ import annotations

from django.utils import timezone

from .models import Quota, QuotaUsage
from .periods import period_bounds


def quota_status_for(*, api_key=None, user=None) -> list[dict]:
    """The active quotas of a key or a user with their use in the current period.

    ``used`` is what settlement has recorded (QuotaUsage); requests still in flight are
    not in it yet."""
    if (api_key is None) == (user is None):
        raise ValueError("pass exactly one of api_key or user")
    quotas = Quota.objects.filter(status=Quota.Status.ACTIVE)
    quotas = quotas.filter(api_key=api_key) if api_key is not None else quotas.filter(user=user)
    now = timezone.now()
    result = []
    for quota in quotas.order_by("id"):
        start, end = period_bounds(quota.period, now, quota.reset_time)
        used = (
            QuotaUsage.objects.filter(quota=quota, period_start=start).values_list("used", flat=True).first()
            or 0
        )
        result.append(
            {
                "id": quota.pk,
                "metric": quota.metric,
                "period": quota.period,
                "limit": quota.limit,
                "used": used,
                "remaining": max(quota.limit - used, 0),
                "period_start": start,
                "resets_at": end,
            }
        )
    return result
