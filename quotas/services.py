"""Writes on quotas (the live counters are in quotas.counters)."""

from __future__ import annotations

from datetime import time
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from .models import Quota, QuotaUsage

UPDATABLE = ("limit", "reset_time", "status")


def quota_create(
    *,
    metric: str,
    period: str,
    limit: int,
    api_key=None,
    user=None,
    reset_time: time | None = None,
    status: str = Quota.Status.ACTIVE,
) -> Quota:
    """A quota on exactly one of ``api_key`` or ``user``."""
    if (api_key is None) == (user is None):
        raise ValidationError("A quota belongs to exactly one of api_key or user.")
    quota = Quota(
        api_key=api_key,
        user=user,
        metric=metric,
        period=period,
        limit=limit,
        reset_time=reset_time,
        status=status,
    )
    quota.full_clean(exclude=["api_key", "user"])
    quota.save()
    return quota


def quota_update(*, quota: Quota, data: dict[str, Any]) -> Quota:
    unknown = set(data) - set(UPDATABLE)
    if unknown:
        raise ValidationError({name: ["This field cannot be changed."] for name in sorted(unknown)})
    for name, value in data.items():
        setattr(quota, name, value)
    quota.full_clean(exclude=["api_key", "user"])
    if data:
        quota.save(update_fields=list(data))
    return quota


@transaction.atomic
def quota_delete(*, quota: Quota) -> None:
    """A quota and its per-period counters (they mean nothing without it)."""
    QuotaUsage.objects.filter(quota_id=quota.pk).delete()
    quota.delete()
