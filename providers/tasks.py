"""Celery entry points for providers; they only call services."""

from __future__ import annotations

from celery import shared_task

from .health import provider_check, providers_to_check


@shared_task(name="providers.check_providers", ignore_result=True)
def check_providers() -> dict[str, bool]:
    return {provider.name: provider_check(provider=provider).ok for provider in providers_to_check()}
