from __future__ import annotations

from django.conf import settings
from django.db import models

from billing.fields import MoneyField


class MidjourneyTask(models.Model):
    """A Midjourney job relayed to a midjourney-proxy upstream and polled until done."""

    class Action(models.TextChoices):
        IMAGINE = "IMAGINE", "Imagine"
        UPSCALE = "UPSCALE", "Upscale"
        VARIATION = "VARIATION", "Variation"
        REROLL = "REROLL", "Reroll"
        ZOOM = "ZOOM", "Zoom"
        PAN = "PAN", "Pan"
        DESCRIBE = "DESCRIBE", "Describe"
        BLEND = "BLEND", "Blend"
        SHORTEN = "SHORTEN", "Shorten"
        ACTION = "ACTION", "Button action"
        MODAL = "MODAL", "Modal"

    class Status(models.TextChoices):
        NOT_START = "NOT_START", "Not started"
        SUBMITTED = "SUBMITTED", "Submitted"
        MODAL = "MODAL", "Waiting for modal input"
        IN_PROGRESS = "IN_PROGRESS", "In progress"
        FAILURE = "FAILURE", "Failed"
        SUCCESS = "SUCCESS", "Succeeded"
        CANCEL = "CANCEL", "Cancelled"

    class Mode(models.TextChoices):
        FAST = "fast", "Fast"
        RELAX = "relax", "Relax"
        TURBO = "turbo", "Turbo"

    task_id = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    api_key = models.ForeignKey(
        "keys.APIKey", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    provider = models.ForeignKey(
        "providers.Provider", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="children",
    )
    upstream_task_id = models.CharField(max_length=100, blank=True, db_index=True)
    action = models.CharField(max_length=16, choices=Action.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NOT_START, db_index=True)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.FAST)
    progress = models.CharField(max_length=8, default="0%")
    prompt = models.TextField(blank=True)
    prompt_en = models.TextField(blank=True)
    description = models.TextField(blank=True)
    state = models.CharField(max_length=255, blank=True, help_text="Opaque client state echoed back.")
    hook_url = models.URLField(max_length=500, blank=True)
    image_url = models.URLField(max_length=1000, blank=True)
    image_urls = models.JSONField(default=list, blank=True)
    buttons = models.JSONField(default=list, blank=True)  # [{"customId", "label", "emoji", "style", "type"}]
    properties = models.JSONField(default=dict, blank=True)
    fail_reason = models.TextField(blank=True)
    cost = MoneyField(default=0)
    charged = models.BooleanField(default=False)
    refunded = models.BooleanField(default=False)
    submit_time = models.DateTimeField(null=True, blank=True)
    start_time = models.DateTimeField(null=True, blank=True)
    finish_time = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["user", "-created_at"]),
            models.Index(fields=["status", "updated_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.task_id} ({self.status})"
