"""Writes on providers, models and routes."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import ProtectedError
from django.utils import timezone

from billing.models import ModelPrice, UsageLog

from . import crypto
from .models import Model, Provider, ProviderModel


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


PROVIDER_FIELDS = (
    "name",
    "type",
    "base_url",
    "api_version",
    "priority",
    "weight",
    "timeout_seconds",
    "max_retries",
    "extra_headers",
    "responses_api",
    "health_check_enabled",
    "health_check_model",
)
MODEL_FIELDS = (
    "slug",
    "display_name",
    "type",
    "context_length",
    "max_output_tokens",
    "supports_streaming",
    "supports_tools",
    "supports_vision",
    "supports_json_mode",
    "supports_reasoning",
    "web_search",
    "status",
    "routing_strategy",
    "owned_by",
    "description",
)
ROUTE_FIELDS = (
    "upstream_model",
    "enabled",
    "priority",
    "weight",
    "extra_headers",
    "extra_params",
    "bill_upstream_model",
)


def _assign(instance, data: dict[str, Any], allowed: tuple[str, ...]) -> list[str]:
    unknown = set(data) - set(allowed)
    if unknown:
        raise ValidationError({name: ["This field cannot be changed."] for name in sorted(unknown)})
    for name, value in data.items():
        setattr(instance, name, value)
    return list(data)


@transaction.atomic
def provider_update(
    *,
    provider: Provider,
    data: dict[str, Any],
    api_key: str | None = None,
    status: str | None = None,
    status_reason: str = "",
) -> Provider:
    """Change settings; ``api_key`` (when given) replaces the credentials, which are never
    read back; ``status`` goes through ``provider_set_status`` (reason and time recorded)."""
    fields = _assign(provider, data, PROVIDER_FIELDS)
    if "base_url" in data:
        provider.base_url = provider.base_url.rstrip("/")
    provider.full_clean()
    if fields:
        provider.save(update_fields=[*fields, "updated_at"])
    if api_key is not None:
        provider_set_credentials(provider=provider, api_key=api_key)
    if status is not None and status != provider.status:
        provider_set_status(
            provider=provider, status=status, reason=status_reason or "changed through the API"
        )
    return provider


@transaction.atomic
def provider_delete(*, provider: Provider) -> None:
    """Delete a provider that never served a request, with its routes."""
    if UsageLog.objects.filter(provider_id=provider.pk).exists():
        raise ProtectedError("This provider has usage logs; disable it instead of deleting it.", [provider])
    for route in ProviderModel.objects.filter(provider_id=provider.pk):
        route.delete()
    provider.delete()


def model_create(*, slug: str, **fields: Any) -> Model:
    model = Model(slug=slug)
    _assign(model, fields, MODEL_FIELDS)
    model.full_clean()
    model.save()
    return model


def model_update(*, model: Model, data: dict[str, Any]) -> Model:
    fields = _assign(model, data, MODEL_FIELDS)
    model.full_clean()
    if fields:
        model.save(update_fields=fields)
    return model


@transaction.atomic
def model_delete(*, model: Model) -> None:
    """Delete a model without routes or prices (usage logs name models by slug, so they
    keep their meaning). Otherwise disable it."""
    if ProviderModel.objects.filter(model_id=model.pk).exists():
        raise ProtectedError("This model has routes; delete them first or disable the model.", [model])
    if ModelPrice.objects.filter(model_id=model.pk).exists():
        raise ProtectedError("This model has prices; disable the model instead of deleting it.", [model])
    model.delete()


def route_create(*, provider: Provider, model: Model, **fields: Any) -> ProviderModel:
    if ProviderModel.objects.filter(provider=provider, model=model).exists():
        raise ValidationError({"model": ["This provider already has a route for this model."]})
    route = ProviderModel(provider=provider, model=model)
    _assign(route, fields, ROUTE_FIELDS)
    route.full_clean(validate_unique=False)
    route.save()
    return route


def route_update(*, route: ProviderModel, data: dict[str, Any]) -> ProviderModel:
    fields = _assign(route, data, ROUTE_FIELDS)
    route.full_clean(validate_unique=False)
    if fields:
        route.save(update_fields=fields)
    return route


def route_delete(*, route: ProviderModel) -> None:
    route.delete()


@transaction.atomic
def routes_add_upstream_models(*, provider: Provider, upstream_models: list[str]) -> list[ProviderModel]:
    """Route the given upstream model names through ``provider``: each becomes a model of
    the same slug (made when missing, without a price: the operator sets one) and a route.
    Names the provider already routes are skipped."""
    added = []
    for name in dict.fromkeys(n.strip() for n in upstream_models if n.strip()):
        model = Model.objects.filter(slug=name).first() or model_create(slug=name)
        if ProviderModel.objects.filter(provider=provider, model=model).exists():
            continue
        added.append(route_create(provider=provider, model=model))
    return added
