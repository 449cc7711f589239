"""Any operator change to what the relay caches bumps the shared config version, once
the change is committed: bumped inside the transaction, another worker could reload the
old rows before the commit and keep them for RELAY_CACHE_TTL (a revoked key served on)."""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from .config import bump_version


def _changed(sender, **kwargs) -> None:
    transaction.on_commit(bump_version, using=kwargs.get("using"))


def connect() -> None:
    from accounts.models import PriceGroup, User
    from billing.models import ModelPrice
    from keys.models import APIKey
    from providers.models import Model, Provider, ProviderModel
    from quotas.models import Quota

    for model in (User, PriceGroup, APIKey, Provider, Model, ProviderModel, ModelPrice, Quota):
        post_save.connect(_changed, sender=model, dispatch_uid=f"relay-config-{model.__name__}-save")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"relay-config-{model.__name__}-delete")
