"""Writes on providers, models and routes."""

from __future__ import annotations

from django.utils import timezone

from . import crypto
from .models import Provider


def provider_set_credentials(*, provider: Provider, api_key: str) -> Provider:
    provider.credentials_encrypted = crypto.encrypt(api_key)
    if provider.pk:
        provider.save(update_fields=["credentials_encrypted", "updated_at"])
    return provider


def provider_get_credentials(*, provider: Provider) -> str:
    return crypto.decrypt(provider.credentials_encrypted)


def provider_create(*, name: str, type: str, base_url: str, api_key: str = "", **fields) -> Provider:
    provider = Provider(name=name, type=type, base_url=base_url.rstrip("/"), **fields)
    provider.credentials_encrypted = crypto.encrypt(api_key)
    provider.full_clean()
    provider.save()
    return provider


def provider_set_status(*, provider: Provider, status: str, reason: str = "") -> Provider:
    if status not in Provider.Status.values:
        raise ValueError(f"unknown provider status {status!r}")
    provider.status = status
    provider.status_reason = reason[:500]
    provider.status_changed_at = timezone.now()
    provider.save(update_fields=["status", "status_reason", "status_changed_at", "updated_at"])
    return provider
