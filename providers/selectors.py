"""Reads on providers, models and routes. Credentials are never read here."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from .models import Model, Provider, ProviderModel


def provider_list(*, filters: dict | None = None) -> QuerySet[Provider]:
    filters = filters or {}
    providers = Provider.objects.all()
    for name in ("type", "status", "health_status"):
        if filters.get(name):
            providers = providers.filter(**{name: filters[name]})
    if filters.get("search"):
        term = filters["search"]
        providers = providers.filter(Q(name__icontains=term) | Q(base_url__icontains=term))
    return providers.order_by(filters.get("ordering") or "-priority", "name", "id")


def provider_get(*, provider_id: int) -> Provider | None:
    return Provider.objects.filter(pk=provider_id).first()


def model_list(*, filters: dict | None = None) -> QuerySet[Model]:
    filters = filters or {}
    models = Model.objects.all()
    for name in ("type", "status"):
        if filters.get(name):
            models = models.filter(**{name: filters[name]})
    if filters.get("search"):
        term = filters["search"]
        models = models.filter(Q(slug__icontains=term) | Q(display_name__icontains=term))
    return models.order_by(filters.get("ordering") or "slug", "id")


def model_get(*, model_id: int) -> Model | None:
    return Model.objects.filter(pk=model_id).first()


def route_list(*, filters: dict | None = None) -> QuerySet[ProviderModel]:
    filters = filters or {}
    routes = ProviderModel.objects.select_related("provider", "model")
    if filters.get("provider"):
        routes = routes.filter(provider_id=filters["provider"])
    if filters.get("model"):
        routes = routes.filter(model_id=filters["model"])
    if filters.get("enabled") is not None:
        routes = routes.filter(enabled=filters["enabled"])
    return routes.order_by(filters.get("ordering") or "model__slug", "-priority", "id")


def route_get(*, route_id: int) -> ProviderModel | None:
    return ProviderModel.objects.select_related("provider", "model").filter(pk=route_id).first()
