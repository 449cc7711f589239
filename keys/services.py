"""Writes on API keys. The plain key exists only in the return value of create/rotate."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

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
    )
    key.replaced_by = issued.key
    key.valid_until = timezone.now() + grace
    key.save(update_fields=["replaced_by", "valid_until"])
    return issued
