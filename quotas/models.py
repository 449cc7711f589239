from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Quota(models.Model):
    """A limit on requests, tokens or cost over a period, for one key or one user."""

    class Metric(models.TextChoices):
        REQUESTS = "requests", "Requests"
        TOKENS = "tokens", "Tokens"
        COST = "cost", "Cost (money)"

    class Period(models.TextChoices):
        MINUTE = "minute", "Minute"
        HOUR = "hour", "Hour"
        DAY = "day", "Day"
        MONTH = "month", "Month"
        LIFETIME = "lifetime", "Lifetime"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        DISABLED = "disabled", "Disabled"

    api_key = models.ForeignKey(
        "keys.APIKey",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="quotas",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="quotas",
    )
    metric = models.CharField(max_length=16, choices=Metric.choices)
    period = models.CharField(max_length=16, choices=Period.choices)
    limit = models.BigIntegerField(
        help_text="Requests, tokens, or cost (stored in nanos, entered as an amount)."
    )
    reset_time = models.TimeField(
        null=True, blank=True, help_text="Day/month periods start at this time (UTC)."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(api_key__isnull=False, user__isnull=True)
                | Q(api_key__isnull=True, user__isnull=False),
                name="quota_owner_is_key_xor_user",
            ),
            models.CheckConstraint(condition=Q(limit__gte=0), name="quota_limit_not_negative"),
        ]
        indexes = [models.Index(fields=["api_key", "status"]), models.Index(fields=["user", "status"])]

    def __str__(self) -> str:
        owner = f"key {self.api_key_id}" if self.api_key_id else f"user {self.user_id}"
        return f"{owner}: {self.limit} {self.metric}/{self.period}"


class QuotaUsage(models.Model):
    quota = models.ForeignKey(Quota, on_delete=models.DO_NOTHING, db_constraint=False, related_name="usage")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField(null=True, blank=True)
    used = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["quota", "period_start"], name="uniq_quota_period")]
