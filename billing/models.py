from __future__ import annotations

from django.conf import settings
from django.db import models

from core.fields import MoneyField
from core.money import format_money

_USER = settings.AUTH_USER_MODEL


class ModelPrice(models.Model):
    """One version of a model's price; the version in force is the latest ``effective_from``
    not in the future whose ``effective_until`` has not passed. Amounts are nanos."""

    model = models.ForeignKey(
        "providers.Model", on_delete=models.DO_NOTHING, db_constraint=False, related_name="prices"
    )
    input_per_1m = MoneyField(default=0, help_text="Per 1M prompt tokens (not served from cache).")
    output_per_1m = MoneyField(default=0, help_text="Per 1M completion tokens.")
    cached_input_per_1m = MoneyField(default=0, help_text="Per 1M prompt tokens served from cache.")
    per_request = MoneyField(default=0, help_text="Fixed price per call (images, Midjourney, search).")
    currency = models.CharField(max_length=3, default="USD")
    effective_from = models.DateTimeField()
    effective_until = models.DateTimeField(null=True, blank=True)
    note = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_id", "-effective_from"]
        indexes = [models.Index(fields=["model", "-effective_from"])]

    def __str__(self) -> str:
        return f"{self.model_id} from {self.effective_from:%Y-%m-%d %H:%M}"


class UsageLog(models.Model):
    """One relay request, settled. Written in bulk by the settlement task."""

    class RequestType(models.TextChoices):
        CHAT = "chat", "Chat completion"
        COMPLETION = "completion", "Completion"
        EMBEDDING = "embedding", "Embedding"
        MESSAGES = "messages", "Anthropic messages"
        RESPONSES = "responses", "OpenAI responses"
        MIDJOURNEY = "midjourney", "Midjourney"
        SEARCH = "search", "Web search"
        OTHER = "other", "Other"

    request_id = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(db_index=True)
    user = models.ForeignKey(
        _USER, null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    api_key = models.ForeignKey(
        "keys.APIKey", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    provider = models.ForeignKey(
        "providers.Provider", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    request_type = models.CharField(max_length=16, choices=RequestType.choices, default=RequestType.CHAT)
    endpoint = models.CharField(max_length=100)
    model_requested = models.CharField(max_length=200, db_index=True)
    model_upstream = models.CharField(max_length=200, blank=True)
    model_billed = models.CharField(max_length=200, blank=True)
    providers_tried = models.JSONField(
        default=list, blank=True
    )  # [{"provider": id, "status": n, "error": s}]
    stream = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False, help_text="Counted locally: the upstream gave none.")
    cost = MoneyField(default=0)
    price = models.ForeignKey(
        ModelPrice, null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    status_code = models.PositiveSmallIntegerField(default=200)
    error = models.TextField(blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time to first token.")
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    request_bytes = models.PositiveIntegerField(default=0)
    response_bytes = models.PositiveIntegerField(default=0)
    client_disconnected = models.BooleanField(default=False)
    breakdown = models.JSONField(
        default=dict,
        blank=True,
        help_text="A request answered by several upstream calls (the gateway's web search): "
        "each round's tokens and cost, each search and its price.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"]),
            models.Index(fields=["api_key", "-created_at"]),
            models.Index(fields=["provider", "-created_at"]),
            models.Index(fields=["model_requested", "-created_at"]),
            models.Index(fields=["status_code", "-created_at"]),
        ]

    def __str__(self) -> str:
        return self.request_id


class BillingRecord(models.Model):
    """The ledger. The sum of a user's rows equals the change of the user's balance."""

    class Kind(models.TextChoices):
        USAGE = "usage", "Usage"
        TOPUP = "topup", "Top-up"
        ADJUSTMENT = "adjustment", "Adjustment"
        REFUND = "refund", "Refund"
        REDEMPTION = "redemption", "Redemption"

    user = models.ForeignKey(_USER, on_delete=models.DO_NOTHING, db_constraint=False, related_name="ledger")
    api_key = models.ForeignKey(
        "keys.APIKey",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, db_index=True)
    amount = MoneyField(help_text="Signed: negative is a charge.")
    balance_after = MoneyField()
    currency = models.CharField(max_length=3, default="USD")
    request_id = models.CharField(max_length=64, null=True, blank=True)
    description = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        _USER, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A request is charged at most once, whatever retries the settlement makes.
            models.UniqueConstraint(
                fields=["request_id"], condition=models.Q(kind="usage"), name="uniq_usage_charge_per_request"
            )
        ]
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {format_money(self.amount)} for user {self.user_id}"


class RedemptionCode(models.Model):
    """A prepaid code. Stored hashed like API keys; the plain code is shown once."""

    class Status(models.TextChoices):
        UNUSED = "unused", "Unused"
        REDEEMED = "redeemed", "Redeemed"
        DISABLED = "disabled", "Disabled"

    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    code_hash = models.CharField(max_length=64, unique=True, editable=False)
    amount = MoneyField()
    batch = models.CharField(max_length=100, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNUSED, db_index=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        _USER, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    redeemed_by = models.ForeignKey(
        _USER, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    redeemed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.status})"


class DailyUsage(models.Model):
    """Per day, user, key and model roll-up; survives usage-log retention."""

    day = models.DateField()
    user = models.ForeignKey(
        _USER, null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    api_key = models.ForeignKey(
        "keys.APIKey", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    model = models.CharField(max_length=200)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    cost = MoneyField(default=0)

    class Meta:
        verbose_name_plural = "daily usage"
        constraints = [
            models.UniqueConstraint(fields=["day", "user", "api_key", "model"], name="uniq_daily_usage"),
        ]
        indexes = [models.Index(fields=["day", "model"])]
