"""The relay's in-process view of keys, users, models, routes and prices.

Steady state makes no SQL query: entries are loaded once with the async ORM and kept in
plain dicts. Operators' changes reach every worker through a version stamp in the shared
cache (Redis in production): any save or delete of a relevant model bumps it (see
``relay.signals``), and each worker compares its copy at most once a second; a changed
stamp drops the whole snapshot. ``RELAY_CACHE_TTL`` bounds the age of an entry anyway.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from billing.pricing import Price, multiplier_ppm

from .conf import HOT
from .db import db_async

logger = logging.getLogger(__name__)

VERSION_KEY = "relay:config-version"
VERSION_CHECK_INTERVAL = 1.0
NEGATIVE_TTL = 10.0  # unknown key hashes are remembered this long (slows guessing floods)

# Number of loads from the database; tests assert it stays flat in steady state.
LOADS = {"keys": 0, "models": 0, "catalog": 0}


@dataclass(slots=True)
class KeyInfo:
    id: int
    user_id: int
    prefix: str
    status: str
    expires_at: float | None
    valid_until: float | None
    allowed_models: frozenset[str] | None
    allowed_networks: tuple | None
    rpm_limit: int | None
    tpm_limit: int | None
    concurrency_limit: int | None
    budget: int | None
    user_status: str
    user_active: bool
    multiplier: int
    user_rpm_limit: int | None = None
    credit: int = 0  # the user's credit limit: how far below zero the balance may go
    balance: int = 0  # at load time; the counter store keeps the live figure
    balance_seq: int = 0  # id of the ledger row behind ``balance``
    spent: int = 0  # the key's spending at load time
    quotas: tuple = ()  # QuotaSpec of the key's and the user's active quotas
    web_search: bool = False  # the gateway's web search for requests that do not ask themselves
    loaded_at: float = field(default_factory=time.monotonic)
    limits_cache: tuple | None = field(default=None, repr=False, compare=False)  # relay.limits' own

    def refusal(self, now: float) -> tuple[int, str, str] | None:
        """(status, code, message) when this key may not be used now, else None."""
        if self.status == "revoked":
            return 401, "invalid_api_key", "This API key has been revoked."
        if self.status == "suspended":
            return 401, "invalid_api_key", "This API key is suspended."
        if self.status == "expired" or (self.expires_at is not None and now >= self.expires_at):
            return 401, "invalid_api_key", "This API key has expired."
        if self.valid_until is not None and now >= self.valid_until:
            return 401, "invalid_api_key", "This API key was rotated and its grace period has ended."
        if not self.user_active or self.user_status != "active":
            return 403, "account_inactive", f"The account that owns this key is {self.user_status}."
        return None

    def ip_allowed(self, ip: str | None) -> bool:
        if not self.allowed_networks:
            return True
        if not ip:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self.allowed_networks)

    def model_allowed(self, slug: str) -> bool:
        return self.allowed_models is None or slug in self.allowed_models


@dataclass(frozen=True, slots=True)
class QuotaSpec:
    id: int
    metric: str  # requests, tokens, cost
    period: str
    limit: int
    reset_time: object  # datetime.time or None
    used_since: float  # start (epoch) of the period ``used`` belongs to
    used: int  # recorded by settlement at load time; seeds a counter the store lacks
    owner: str  # "key" or "user"


@dataclass(slots=True)
class Route:
    provider_id: int
    provider_name: str
    provider_type: str
    base_url: str
    api_key: str
    api_version: str
    timeout: float
    max_retries: int
    tier: int
    weight: int
    upstream_model: str
    extra_headers: dict
    extra_params: dict
    bill_upstream_model: bool
    responses_api: bool = False  # the upstream serves /v1/responses itself (passed through)


@dataclass(slots=True)
class ModelInfo:
    slug: str
    type: str
    strategy: str
    created: int
    owned_by: str
    routes: list[Route]
    price: Price | None
    max_output_tokens: int | None
    fresh_until: float  # monotonic time after which the entry is reloaded (price boundaries, TTL)
    reasoning: bool = False  # ask translated upstreams for reasoning when a client wants thinking
    web_search: bool = False  # the gateway's web search for requests that do not ask themselves


class ConfigCache:
    def __init__(self) -> None:
        self.keys: dict[str, KeyInfo | None] = {}
        self.negative: dict[str, float] = {}
        self.models: dict[str, ModelInfo | None] = {}
        self.prices: dict[str, tuple[Price | None, float]] = {}
        self.catalog: list[ModelInfo] | None = None
        self.version: object = None
        self.next_check = 0.0
        self.pending: dict[str, asyncio.Future] = {}

    async def _once(self, name: str, loader, *args):
        """Single flight: concurrent misses for the same entry share one database load
        (a burst of requests on a cold worker would otherwise queue a load each)."""
        future = self.pending.get(name)
        if future is not None:
            return await asyncio.shield(future)
        future = asyncio.get_running_loop().create_future()
        self.pending[name] = future
        try:
            result = await loader(*args)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) re-raise it themselves
            raise
        else:
            future.set_result(result)
            return result
        finally:
            self.pending.pop(name, None)

    def clear(self) -> None:
        self.keys.clear()
        self.negative.clear()
        self.models.clear()
        self.prices.clear()
        self.catalog = None

    async def check_version(self) -> None:
        now = time.monotonic()
        if now < self.next_check:
            return
        self.next_check = now + VERSION_CHECK_INTERVAL
        try:
            version = await cache.aget(VERSION_KEY)
        except Exception:  # a cache outage must not stop the relay; keep serving the copy
            logger.warning("config version check failed", exc_info=True)
            return
        if version != self.version:
            if self.version is not None or version is not None:
                self.clear()
            self.version = version

    # --- keys ---------------------------------------------------------------------------

    async def key(self, key_hash: str) -> KeyInfo | None:
        info = self.keys.get(key_hash)
        now = time.monotonic()
        if info is not None and now - info.loaded_at < HOT.RELAY_CACHE_TTL:
            return info
        if info is None and self.negative.get(key_hash, 0.0) > now:
            return None
        info = await self._once("key:" + key_hash, load_key, key_hash)
        if info is None:
            self.negative[key_hash] = now + NEGATIVE_TTL
            if len(self.negative) > 100_000:
                self.negative.clear()
        else:
            self.keys[key_hash] = info
        return info

    # --- models -------------------------------------------------------------------------

    async def model(self, slug: str) -> ModelInfo | None:
        now = time.monotonic()
        if slug in self.models:
            info = self.models[slug]
            if info is not None and now < info.fresh_until:
                return info
            if info is None and self.negative.get("model:" + slug, 0.0) > now:
                return None
        info = await self._once("model:" + slug, load_model, slug)
        self.models[slug] = info
        if info is None:
            self.negative["model:" + slug] = now + NEGATIVE_TTL
        return info

    async def price_for(self, slug: str) -> Price | None:
        """Price of an arbitrary model slug (used when a route bills the upstream name)."""
        entry = self.prices.get(slug)
        now = time.monotonic()
        if entry is not None and now < entry[1]:
            return entry[0]
        price, fresh_until = await self._once("price:" + slug, load_price, slug)
        self.prices[slug] = (price, fresh_until)
        return price

    async def all_models(self) -> list[ModelInfo]:
        now = time.monotonic()
        if self.catalog is None or any(now >= m.fresh_until for m in self.catalog):
            self.catalog = await self._once("catalog", load_catalog)
        return self.catalog


CONFIG = ConfigCache()


def bump_version() -> None:
    """Tell every worker to drop its copy (called from signals and services)."""
    try:
        cache.set(VERSION_KEY, time.time_ns(), timeout=None)
    except Exception:
        logger.warning("could not bump the relay config version", exc_info=True)
    CONFIG.clear()
    CONFIG.next_check = 0.0


# --- loaders (the only place the relay touches the database) ------------------------------


def _ts(value) -> float | None:
    if value is None:
        return None
    # stored as wall-clock; the relay compares with time.time()
    return value.timestamp()


def _load_key_sync(key_hash: str) -> KeyInfo | None:
    from django.db.models import Max

    from billing.models import BillingRecord
    from keys.models import APIKey

    LOADS["keys"] += 1
    row = APIKey.objects.select_related("user", "user__group").filter(key_hash=key_hash).first()
    if row is None:
        return None
    user = row.user
    networks = tuple(ipaddress.ip_network(n, strict=False) for n in row.allowed_ips or ()) or None
    balance_seq = BillingRecord.objects.filter(user_id=user.pk).aggregate(seq=Max("id"))["seq"] or 0
    return KeyInfo(
        id=row.pk,
        user_id=user.pk,
        prefix=row.prefix,
        status=row.status,
        expires_at=_ts(row.expires_at),
        valid_until=_ts(row.valid_until),
        allowed_models=frozenset(row.allowed_models) if row.allowed_models else None,
        allowed_networks=networks,
        rpm_limit=row.rpm_limit,
        tpm_limit=row.tpm_limit,
        concurrency_limit=row.concurrency_limit,
        budget=row.budget,
        user_status=user.status,
        user_active=user.is_active,
        multiplier=multiplier_ppm(user.group.multiplier if user.group_id and user.group else None),
        user_rpm_limit=user.rpm_limit,
        credit=user.credit_limit,
        balance=user.balance,
        balance_seq=balance_seq,
        spent=row.spent,
        quotas=_quota_specs(row.pk, user.pk),
        web_search=row.web_search,
    )


def _quota_specs(key_id: int, user_id: int) -> tuple[QuotaSpec, ...]:
    from django.db.models import Q

    from quotas.models import Quota, QuotaUsage
    from quotas.periods import period_bounds

    now = timezone.now()
    specs = []
    rows = Quota.objects.filter(Q(api_key_id=key_id) | Q(user_id=user_id), status=Quota.Status.ACTIVE)
    for quota in rows.order_by("id"):
        start, _ = period_bounds(quota.period, now, quota.reset_time)
        used = (
            QuotaUsage.objects.filter(quota=quota, period_start=start).values_list("used", flat=True).first()
        )
        specs.append(
            QuotaSpec(
                id=quota.pk,
                metric=quota.metric,
                period=quota.period,
                limit=quota.limit,
                reset_time=quota.reset_time,
                used_since=start.timestamp(),
                used=used or 0,
                owner="key" if quota.api_key_id else "user",
            )
        )
    return tuple(specs)


def _price_sync(model_id: int) -> tuple[Price | None, float]:
    """The price in force now, and until when this answer holds (monotonic time)."""
    from billing.models import ModelPrice

    now = timezone.now()
    ttl_end = time.monotonic() + HOT.RELAY_CACHE_TTL
    row = (
        ModelPrice.objects.filter(model_id=model_id, effective_from__lte=now)
        .exclude(effective_until__lte=now)
        .order_by("-effective_from", "-id")
        .first()
    )
    boundaries = []
    upcoming = (
        ModelPrice.objects.filter(model_id=model_id, effective_from__gt=now)
        .order_by("effective_from")
        .values_list("effective_from", flat=True)
        .first()
    )
    if upcoming:
        boundaries.append(upcoming)
    if row is not None and row.effective_until:
        boundaries.append(row.effective_until)
    fresh_until = ttl_end
    if boundaries:
        fresh_until = min(fresh_until, time.monotonic() + (min(boundaries) - now).total_seconds())
    if row is None:
        return None, fresh_until
    price = Price(
        id=row.pk,
        input_per_1m=row.input_per_1m,
        output_per_1m=row.output_per_1m,
        cached_input_per_1m=row.cached_input_per_1m,
        per_request=row.per_request,
    )
    return price, fresh_until


def _routes_sync(model) -> list[Route]:
    from providers import crypto
    from providers.models import Provider, ProviderModel

    routes = []
    rows = ProviderModel.objects.select_related("provider").filter(
        model=model, enabled=True, provider__status=Provider.Status.ENABLED
    )
    for pm in rows:
        provider = pm.provider
        try:
            api_key = crypto.decrypt(provider.credentials_encrypted)
        except crypto.CredentialError:
            logger.error(
                "provider credentials undecryptable; route skipped", extra={"provider": provider.name}
            )
            continue
        routes.append(
            Route(
                provider_id=provider.pk,
                provider_name=provider.name,
                provider_type=provider.type,
                base_url=provider.base_url.rstrip("/"),
                api_key=api_key,
                api_version=provider.api_version,
                timeout=float(provider.timeout_seconds),
                max_retries=provider.max_retries,
                tier=provider.priority + pm.priority,
                weight=max(1, provider.weight * pm.weight),
                upstream_model=pm.upstream_model or model.slug,
                extra_headers={**(provider.extra_headers or {}), **(pm.extra_headers or {})},
                extra_params=dict(pm.extra_params or {}),
                bill_upstream_model=pm.bill_upstream_model,
                responses_api=provider.responses_api,
            )
        )
    return routes


def _model_info(model) -> ModelInfo:
    price, fresh_until = _price_sync(model.pk)
    return ModelInfo(
        slug=model.slug,
        type=model.type,
        strategy=model.routing_strategy or settings.RELAY_ROUTING_STRATEGY,
        created=int(model.created_at.timestamp()),
        owned_by=model.owned_by or "gateway",
        routes=_routes_sync(model),
        price=price,
        max_output_tokens=model.max_output_tokens,
        fresh_until=fresh_until,
        reasoning=model.supports_reasoning,
        web_search=model.web_search,
    )


def _load_model_sync(slug: str) -> ModelInfo | None:
    from providers.models import Model

    LOADS["models"] += 1
    model = Model.objects.filter(slug=slug).exclude(status=Model.Status.DISABLED).first()
    return None if model is None else _model_info(model)


def _load_catalog_sync() -> list[ModelInfo]:
    from providers.models import Model

    LOADS["catalog"] += 1
    models = Model.objects.exclude(status=Model.Status.DISABLED).order_by("slug")
    return [info for info in (_model_info(m) for m in models) if info.routes]


def _load_price_sync(slug: str) -> tuple[Price | None, float]:
    from providers.models import Model

    model = Model.objects.filter(slug=slug).first()
    if model is None:
        return None, time.monotonic() + HOT.RELAY_CACHE_TTL
    return _price_sync(model.pk)


# each load retires dead connections, retries once on a broken one and answers 503 when
# the database is unreachable (relay.db)
load_key = db_async(_load_key_sync)
load_model = db_async(_load_model_sync)
load_catalog = db_async(_load_catalog_sync)
load_price = db_async(_load_price_sync)
