"""Writes on API keys. The plain key exists only in the return value of create/rotate."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .models import APIKey

KEY_PREFIX = "sk-gw-"
PREFIX_LENGTH = 12  # "sk-gw-" and six random characters, enough to tell keys apart


def hash_key(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: APIKey
    plain: str  # show once, never store


def validate_allowed_ips(values: list[str]) -> list[str]:
    cleaned = []
    for value in values or []:
        try:
            cleaned.append(str(ipaddress.ip_network(str(value).strip(), strict=False)))
        except ValueError:
            raise ValidationError({"allowed_ips": f"{value!r} is not an IP address or CIDR range"}) from None
    return cleaned


def api_key_create(
    *,
    user,
    name: str = "",
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    allowed_ips: list[str] | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    concurrency_limit: int | None = None,
    budget: int | None = None,
    metadata: dict | None = None,
    web_search: bool = False,
) -> IssuedKey:
    plain = generate_key()
    key = APIKey(
        user=user,
        name=name,
        prefix=plain[:PREFIX_LENGTH],
        key_hash=hash_key(plain),
        expires_at=expires_at,
        allowed_models=list(allowed_models or []),
        allowed_ips=validate_allowed_ips(allowed_ips or []),
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        concurrency_limit=concurrency_limit,
        budget=budget,
        metadata=metadata or {},
        web_search=web_search,
    )
    key.full_clean(exclude=["user", "prefix", "key_hash"])
    key.save()
    return IssuedKey(key=key, plain=plain)


def api_key_revoke(*, key: APIKey) -> APIKey:
    if key.status != APIKey.Status.REVOKED:
        key.status = APIKey.Status.REVOKED
        key.revoked_at = timezone.now()
        key.save(update_fields=["status", "revoked_at"])
    return key


@transaction.atomic
def api_key_rotate(*, key: APIKey, grace: timedelta) -> IssuedKey:
    """Issue a successor with the same settings; the old key works until now + grace."""
    issued = api_key_create(
        user=key.user,
        name=key.name,
        expires_at=key.expires_at,
        allowed_models=key.allowed_models,
        allowed_ips=key.allowed_ips,
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
        concurrency_limit=key.concurrency_limit,
        budget=key.budget,
        metadata=key.metadata,
        web_search=key.web_search,
    )
    key.replaced_by = issued.key
    key.valid_until = timezone.now() + grace
    key.save(update_fields=["replaced_by", "valid_until"])
    return issued


UPDATABLE_FIELDS = (
    "name",
    "expires_at",
    "allowed_models",
    "allowed_ips",
    "rpm_limit",
    "tpm_limit",
    "concurrency_limit",
    "budget",
    "metadata",
    "web_search",
)
MAX_GRACE = timedelta(days=30)


def api_key_update(*, key: APIKey, data: dict[str, Any]) -> APIKey:
    """Change a key's name, limits, allowed models and IPs, budget or expiry."""
    unknown = set(data) - set(UPDATABLE_FIELDS)
    if unknown:
        raise ValidationError({name: ["This field cannot be changed."] for name in sorted(unknown)})
    if key.status == APIKey.Status.REVOKED:
        raise ValidationError("A revoked key cannot be changed.")
    if not data:
        return key
    if "allowed_ips" in data:
        data = {**data, "allowed_ips": validate_allowed_ips(data["allowed_ips"] or [])}
    if "allowed_models" in data:
        data = {**data, "allowed_models": list(data["allowed_models"] or [])}
    for name, value in data.items():
        setattr(key, name, value)
    fields = list(data)
    if (
        key.status == APIKey.Status.EXPIRED
        and "expires_at" in data
        and (key.expires_at is None or key.expires_at > timezone.now())
    ):
        key.status = APIKey.Status.ACTIVE  # a new expiry in the future brings an expired key back
        fields.append("status")
    key.full_clean(exclude=["user", "prefix", "key_hash", "replaced_by"])
    key.save(update_fields=fields)
    return key


@transaction.atomic
def api_key_regenerate(*, key: APIKey, grace: timedelta) -> IssuedKey:
    """A successor with the same settings; the old key keeps working for ``grace`` (0: it
    stops at once). Only an active key that has not been replaced yet can be regenerated."""
    key = APIKey.objects.select_for_update().get(pk=key.pk)
    if key.status != APIKey.Status.ACTIVE:
        raise ValidationError(f"Only an active key can be regenerated; this one is {key.status}.")
    if key.replaced_by_id is not None:
        raise ValidationError("This key has already been replaced by a newer key.")
    if grace < timedelta(0) or grace > MAX_GRACE:
        raise ValidationError(
            {"grace_seconds": [f"The grace period must be between 0 and {MAX_GRACE.days} days."]}
        )
    return api_key_rotate(key=key, grace=grace)


def api_keys_revoke_for_user(*, user) -> int:
    """Revoke every key of ``user`` that is not revoked yet; returns how many."""
    keys = list(APIKey.objects.filter(user=user).exclude(status=APIKey.Status.REVOKED))
    for key in keys:
        api_key_revoke(key=key)
    return len(keys)
