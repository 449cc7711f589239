"""Provider probes: one cheap authenticated request per provider, timed.

A passing probe re-enables a provider that was auto-disabled (never one an operator
disabled); a failing one records the error. Used by the Celery beat task, the
``test_providers`` command and the admin action.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from django.utils import timezone

from . import crypto
from .models import Provider
from .services import provider_set_status


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    status: int | None
    ms: int
    error: str = ""


def _probe_model(provider: Provider) -> str:
    if provider.health_check_model:
        return provider.health_check_model
    route = provider.routes.filter(enabled=True).select_related("model").first()
    return route.upstream_name if route else ""


def _request(provider: Provider, api_key: str) -> tuple[str, str, dict, dict | None]:
    base = provider.base_url.rstrip("/")
    headers = dict(provider.extra_headers or {})
    if provider.type == Provider.Type.ANTHROPIC:
        headers.update({"x-api-key": api_key, "anthropic-version": provider.api_version or "2023-06-01"})
        model = _probe_model(provider)
        if model:
            body = {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}
            return "POST", f"{base}/messages", headers, body
        return "GET", f"{base}/models", headers, None
    if provider.type == Provider.Type.GEMINI:
        headers["x-goog-api-key"] = api_key
        return "GET", f"{base}/models", headers, None
    if provider.type == Provider.Type.AZURE:
        headers["api-key"] = api_key
        model = _probe_model(provider)
        version = provider.api_version or "2024-10-21"
        body = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        return (
            "POST",
            f"{base}/openai/deployments/{model}/chat/completions?api-version={version}",
            headers,
            body,
        )
    if provider.type == Provider.Type.MIDJOURNEY:
        headers["mj-api-secret"] = api_key
        return "GET", f"{base}/mj/task/list", headers, None
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    model = provider.health_check_model
    if model:
        body = {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        return "POST", f"{base}/chat/completions", headers, body
    return "GET", f"{base}/models", headers, None


def provider_probe(provider: Provider, *, timeout: float = 15.0) -> ProbeResult:
    try:
        api_key = crypto.decrypt(provider.credentials_encrypted)
    except crypto.CredentialError as exc:
        return ProbeResult(False, None, 0, str(exc))
    method, url, headers, body = _request(provider, api_key)
    started = time.monotonic()
    try:
        response = httpx.request(method, url, headers=headers, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        return ProbeResult(
            False, None, int((time.monotonic() - started) * 1000), f"{type(exc).__name__}: {exc}"
        )
    ms = int((time.monotonic() - started) * 1000)
    if response.status_code >= 400:
        return ProbeResult(False, response.status_code, ms, response.text[:500])
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
