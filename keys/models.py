from __future__ import annotations

from django.conf import settings
from django.db import models

from core.fields import MoneyField


class APIKey(models.Model):
    """A client credential for the relay. Only its SHA-256 is stored; ``prefix`` is shown."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False, related_name="api_keys"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    allowed_models = models.JSONField(
        default=list, blank=True, help_text="Model slugs; empty allows every model."
    )
    allowed_ips = models.JSONField(
        default=list, blank=True, help_text="IPs or CIDRs; empty allows every address."
    )
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute.")
    tpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens per minute.")
    concurrency_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Requests in flight.")
    budget = MoneyField(null=True, blank=True, help_text="Spending cap of this key; empty: none.")
    spent = MoneyField(default=0, editable=False)
    metadata = models.JSONField(default=dict, blank=True)
    web_search = models.BooleanField(
        default=False,
        help_text="Run the gateway's web search for this key's chat, completions and messages "
        'requests that do not say "web_search" themselves (needs WEB_SEARCH_URL or a hosted backend).',
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Rotation: the new key points back at nothing; the old one names its successor and
    # stays valid until ``valid_until`` (the grace period), then stops working.
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, db_constraint=False, related_name="+"
    )
    valid_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        indexes = [models.Index(fields=["user", "status"]), models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"
