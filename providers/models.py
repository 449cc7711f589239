from __future__ import annotations

from urllib.parse import urlparse

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models


def validate_base_url(value: str) -> None:
    """Any http(s) URL with a host: internal names such as http://vllm:8000/v1 included."""
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValidationError("Enter an http:// or https:// URL with a host name.")
    try:
        parsed.port  # noqa: B018 - raises on a non-numeric port
    except ValueError:
        raise ValidationError("The port of this URL is not a number.") from None


class Provider(models.Model):
    """An upstream account ("channel"): where to send requests and with which credentials."""

    class Type(models.TextChoices):
        OPENAI = "openai", "OpenAI"
        OPENAI_COMPATIBLE = "openai-compatible", "OpenAI-compatible"
        AZURE = "azure", "Azure OpenAI"
        ANTHROPIC = "anthropic", "Anthropic"
        GEMINI = "gemini", "Google Gemini"
        MIDJOURNEY = "midjourney", "Midjourney proxy"

    class Status(models.TextChoices):
        ENABLED = "enabled", "Enabled"
        DISABLED = "disabled", "Disabled by an operator"
        AUTO_DISABLED = "auto_disabled", "Disabled automatically"

    class Health(models.TextChoices):
        UNKNOWN = "unknown", "Unknown"
        HEALTHY = "healthy", "Healthy"
        UNHEALTHY = "unhealthy", "Unhealthy"

    name = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=32, choices=Type.choices, default=Type.OPENAI)
    base_url = models.CharField(
        max_length=500, validators=[validate_base_url], help_text="e.g. https://api.openai.com/v1"
    )
    # Fernet token (see providers.crypto); never shown, only replaced.
    credentials_encrypted = models.TextField(blank=True, editable=False)
    api_version = models.CharField(
        max_length=32, blank=True, help_text="Azure api-version or anthropic-version."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED, db_index=True)
    status_reason = models.CharField(max_length=500, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    priority = models.IntegerField(default=0, help_text="Higher tiers are tried first.")
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    timeout_seconds = models.PositiveIntegerField(default=120, validators=[MinValueValidator(1)])
    max_retries = models.PositiveSmallIntegerField(default=0, help_text="Extra attempts on this provider.")
    extra_headers = models.JSONField(default=dict, blank=True)
    responses_api = models.BooleanField(
        default=False,
        help_text="The upstream serves the Responses API (/v1/responses) itself (OpenAI, Azure): "
        "/v1/responses requests are passed through to it instead of translated to chat completions. "
        "Leave off for OpenAI-compatible servers that only speak chat completions (vLLM, Ollama...).",
    )
    health_check_enabled = models.BooleanField(default=True)
    health_check_model = models.CharField(max_length=200, blank=True, help_text="Model used by the probe.")
    health_status = models.CharField(max_length=16, choices=Health.choices, default=Health.UNKNOWN)
    last_health_check_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    response_time_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="Measured by the last probe."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "name"]
        indexes = [models.Index(fields=["status", "type"])]

    def __str__(self) -> str:
        return self.name

    @property
    def has_credentials(self) -> bool:
        return bool(self.credentials_encrypted)


class Model(models.Model):
    """A model slug clients ask for, independent of who serves it."""

    class Type(models.TextChoices):
        CHAT = "chat", "Chat"
        COMPLETION = "completion", "Completion"
        EMBEDDING = "embedding", "Embedding"
        IMAGE = "image", "Image"
        AUDIO = "audio", "Audio"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        DEPRECATED = "deprecated", "Deprecated"
        DISABLED = "disabled", "Disabled"

    class Strategy(models.TextChoices):
        DEFAULT = "", "Global default"
        WEIGHTED = "weighted", "Priority tiers, then weighted random"
        ROUND_ROBIN = "round_robin", "Round robin"
        LEAST_CONNECTIONS = "least_connections", "Least connections"
        LOWEST_LATENCY = "lowest_latency", "Lowest latency"

    slug = models.CharField(max_length=200, unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    type = models.CharField(max_length=16, choices=Type.choices, default=Type.CHAT)
    context_length = models.PositiveIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    supports_streaming = models.BooleanField(default=True)
    supports_tools = models.BooleanField(default=False)
    supports_vision = models.BooleanField(default=False)
    supports_json_mode = models.BooleanField(default=False)
    supports_reasoning = models.BooleanField(
        default=False,
        help_text="A reasoning model: when an Anthropic client asks for thinking, translated "
        "upstreams are asked for their reasoning (reasoning_effort, Gemini thoughts).",
    )
    web_search = models.BooleanField(
        default=False,
        help_text="Run the gateway's web search for requests to this model that do not say "
        '"web_search" themselves (chat, completions, messages; needs a configured backend).',
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    routing_strategy = models.CharField(max_length=32, choices=Strategy.choices, default="", blank=True)
    owned_by = models.CharField(max_length=100, blank=True, default="gateway")
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class ProviderModel(models.Model):
    """A route: this provider serves this model, under this upstream name."""

    provider = models.ForeignKey(
        Provider, on_delete=models.DO_NOTHING, db_constraint=False, related_name="routes"
    )
    model = models.ForeignKey(Model, on_delete=models.DO_NOTHING, db_constraint=False, related_name="routes")
    upstream_model = models.CharField(
        max_length=200, blank=True, help_text="Name sent upstream; empty: the slug."
    )
    enabled = models.BooleanField(default=True)
    priority = models.IntegerField(default=0, help_text="Higher first; added to the provider's tier.")
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1)])
    extra_headers = models.JSONField(default=dict, blank=True)
    extra_params = models.JSONField(
        default=dict, blank=True, help_text="Merged into the upstream request body."
    )
    bill_upstream_model = models.BooleanField(
        default=False, help_text="Price the upstream model instead of the requested one."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "provider model route"
        constraints = [models.UniqueConstraint(fields=["provider", "model"], name="uniq_provider_model")]
        indexes = [models.Index(fields=["model", "enabled"])]

    def __str__(self) -> str:
        return f"{self.model_id}@{self.provider_id}"

    @property
    def upstream_name(self) -> str:
        return self.upstream_model or self.model.slug
