"""Provider probes: one cheap authenticated request per provider, timed.

A passing probe re-enables a provider that was auto-disabled (never one an operator
disabled); a failing one records the error. Used by the Celery beat task, the
``test_providers`` command and the console's test button and action. The console's
"fetch models from upstream" asks the adapter for the model list request and reads its
answer the same way (the adapter translates, this module does the HTTP).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.utils import timezone

from . import crypto
from .base import Capability, Target, UpstreamModel, error_message
from .models import Provider
from .registry import get_adapter
from .services import provider_set_status


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    status: int | None
    ms: int
    error: str = ""


def _target(provider: Provider, api_key: str, adapter) -> Target:
    model = provider.health_check_model
    if not model and adapter.probe_needs_model:
        route = provider.routes.filter(enabled=True).select_related("model").first()
        model = route.upstream_name if route else ""
    return Target(
        base_url=provider.base_url.rstrip("/"),
        api_key=api_key,
        upstream_model=model,
        extra_headers=dict(provider.extra_headers or {}),
        api_version=provider.api_version,
    )


class ModelListError(Exception):
    """The upstream's model list could not be read; the message says why, for the operator."""


def provider_upstream_models(provider: Provider, *, timeout: float = 15.0) -> list[UpstreamModel]:
    """The models the provider's upstream account lists (its model-list capability)."""
    import httpx  # here, not at import: httpx brings 25 MB of modules into every relay worker

    adapter = get_adapter(provider.type)
    if not adapter.supports(Capability.MODEL_LIST):
        raise ModelListError(f"Providers of type {provider.get_type_display()} do not list their models.")
    try:
        api_key = crypto.decrypt(provider.credentials_encrypted)
    except crypto.CredentialError as exc:
        raise ModelListError(str(exc)) from None
    request = adapter.models_request(_target(provider, api_key, adapter))
    try:
        response = httpx.request(
            request.method, request.url, headers=request.headers, content=request.body, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise ModelListError(f"The upstream could not be reached: {type(exc).__name__}: {exc}") from None
    if response.status_code >= 400:
        raise ModelListError(
            f"The upstream answered HTTP {response.status_code}: {error_message(response.content)}"
        )
    try:
        return adapter.models_response(response.content)
    except ValueError as exc:  # orjson's decode error is a ValueError too
        raise ModelListError(f"The upstream's answer is not a model list ({exc}).") from None


def provider_probe(provider: Provider, *, timeout: float = 15.0) -> ProbeResult:
    import httpx  # here, not at import: httpx brings 25 MB of modules into every relay worker

    try:
        api_key = crypto.decrypt(provider.credentials_encrypted)
    except crypto.CredentialError as exc:
        return ProbeResult(False, None, 0, str(exc))
    adapter = get_adapter(provider.type)
    if not adapter.supports(Capability.PROBE):
        return ProbeResult(False, None, 0, f"providers of type {provider.type} cannot be probed")
    request = adapter.probe_request(_target(provider, api_key, adapter))
    started = time.monotonic()
    try:
        response = httpx.request(
            request.method, request.url, headers=request.headers, content=request.body, timeout=timeout
        )
    except httpx.HTTPError as exc:
        return ProbeResult(
            False, None, int((time.monotonic() - started) * 1000), f"{type(exc).__name__}: {exc}"
        )
    ms = int((time.monotonic() - started) * 1000)
    if response.status_code >= 400:
        return ProbeResult(False, response.status_code, ms, error_message(response.content))
    return ProbeResult(True, response.status_code, ms)


def provider_check(*, provider: Provider) -> ProbeResult:
    """Probe, record the outcome, and re-enable an auto-disabled provider that passes."""
    result = provider_probe(provider)
    provider.last_health_check_at = timezone.now()
    provider.health_status = Provider.Health.HEALTHY if result.ok else Provider.Health.UNHEALTHY
    if result.ok:
        provider.response_time_ms = result.ms
    else:
        provider.last_error = (f"HTTP {result.status}: " if result.status else "") + result.error[:1900]
    provider.save(update_fields=["last_health_check_at", "health_status", "response_time_ms", "last_error"])
    if result.ok and provider.status == Provider.Status.AUTO_DISABLED:
        provider_set_status(
            provider=provider, status=Provider.Status.ENABLED, reason="re-enabled by a passing probe"
        )
    return result


def providers_to_check():
    return Provider.objects.filter(
        health_check_enabled=True, status__in=[Provider.Status.ENABLED, Provider.Status.AUTO_DISABLED]
    )
