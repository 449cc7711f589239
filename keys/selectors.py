"""Reads on API keys. Pass ``user`` to see only that user's keys (self-service)."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from .models import APIKey


def api_key_list(*, user=None, filters: dict | None = None) -> QuerySet[APIKey]:
    filters = filters or {}
    keys = APIKey.objects.select_related("user")
    if user is not None:
        keys = keys.filter(user=user)
    if filters.get("user"):
        keys = keys.filter(user_id=filters["user"])
    if filters.get("status"):
        keys = keys.filter(status=filters["status"])
    if filters.get("search"):
        term = filters["search"]
        keys = keys.filter(Q(name__icontains=term) | Q(prefix__startswith=term))
    return keys.order_by(filters.get("ordering") or "-created_at", "-id")


def api_key_get(*, key_id: int, user=None) -> APIKey | None:
    """The key, or None when it does not exist or (with ``user``) belongs to someone else."""
    keys = APIKey.objects.select_related("user")
    if user is not None:
        keys = keys.filter(user=user)
    return keys.filter(pk=key_id).first()


def api_key_owned(*, key_id: int, user) -> bool:
    return APIKey.objects.filter(pk=key_id, user=user).exists()
