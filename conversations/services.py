"""Writes on stored responses."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from .models import StoredResponse, UpstreamResponse


def stored_response_create(
    *,
    response_id: str,
    user_id: int,
    api_key_id: int | None,
    model: str,
    response: dict,
    input_items: list,
    messages: list,
    previous_response_id: str = "",
    created_at: datetime | None = None,
) -> StoredResponse:
    return StoredResponse.objects.create(
        response_id=response_id,
        user_id=user_id,
        api_key_id=api_key_id,
        model=model,
        response=response,
        input_items=input_items,
        messages=messages,
        previous_response_id=previous_response_id or "",
        created_at=created_at or timezone.now(),
    )


def upstream_response_create(
    *,
    response_id: str,
    user_id: int,
    api_key_id: int | None,
    provider_id: int,
    model: str,
    created_at: datetime | None = None,
) -> UpstreamResponse:
    record, _ = UpstreamResponse.objects.get_or_create(
        response_id=response_id,
        defaults={
            "user_id": user_id,
            "api_key_id": api_key_id,
            "provider_id": provider_id,
            "model": model,
            "created_at": created_at or timezone.now(),
        },
    )
    return record


def upstream_response_delete(*, user_id: int, response_id: str) -> bool:
    deleted, _ = UpstreamResponse.objects.filter(response_id=response_id, user_id=user_id).delete()
    return deleted > 0


def stored_response_delete(*, user_id: int, response_id: str) -> bool:
    """True when the user had that response (now deleted)."""
    deleted, _ = StoredResponse.objects.filter(response_id=response_id, user_id=user_id).delete()
    return deleted > 0


def stored_responses_purge(*, older_than_days: int, batch_size: int = 1000) -> int:
    """Delete stored responses older than the retention period, a batch of ids at a time
    (short transactions). 0 days keeps them forever."""
    if older_than_days <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted = 0
    for model in (StoredResponse, UpstreamResponse):
        deleted += _purge(model, cutoff, batch_size)
    return deleted


def _purge(model, cutoff, batch_size: int) -> int:
    deleted = 0
    while True:
        ids = list(
            model.objects.filter(created_at__lt=cutoff)
            .order_by("id")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return deleted
        deleted += model.objects.filter(id__in=ids).delete()[0]
