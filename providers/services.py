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


def provider_auto_disable(*, provider_id: int, reason: str) -> bool:
    """Take a provider out of rotation after a credential or balance error.

    Only an enabled provider is switched (an operator's manual "disabled" stays as it is);
    the health check re-enables it after a passing probe. Returns True when it changed.
    """
    provider = Provider.objects.filter(pk=provider_id, status=Provider.Status.ENABLED).first()
    if provider is None:
        return False
    provider_set_status(provider=provider, status=Provider.Status.AUTO_DISABLED, reason=f"auto: {reason}")
    provider.last_error = reason[:2000]
    provider.health_status = Provider.Health.UNHEALTHY
    provider.save(update_fields=["last_error", "health_status", "updated_at"])
    return True
