"""Asynchronous upstream jobs. Midjourney tasks: the gateway's own id is what clients see,
the upstream's id is kept to poll the provider that made the task."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from core.fields import MoneyField

_USER = settings.AUTH_USER_MODEL


class MidjourneyTask(models.Model):
    class Status(models.TextChoices):
        NOT_START = "NOT_START"
        SUBMITTED = "SUBMITTED"
        MODAL = "MODAL"
        IN_PROGRESS = "IN_PROGRESS"
        FAILURE = "FAILURE"
        SUCCESS = "SUCCESS"
        CANCEL = "CANCEL"

    FINAL = (Status.SUCCESS, Status.FAILURE, Status.CANCEL)

    task_id = models.CharField(max_length=40, unique=True, help_text="The id clients see.")
    upstream_task_id = models.CharField(max_length=100, blank=True)
    user = models.ForeignKey(_USER, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+")
    api_key = models.ForeignKey(
        "keys.APIKey", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    provider = models.ForeignKey(
        "providers.Provider", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    action = models.CharField(max_length=32)
    model = models.CharField(max_length=64, help_text="The priced model, e.g. mj_imagine.")
    mode = models.CharField(max_length=16, blank=True, help_text="fast, relax, turbo or empty.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUBMITTED)
    progress = models.PositiveSmallIntegerField(default=0)
    prompt = models.TextField(blank=True)
    prompt_en = models.TextField(blank=True)
    description = models.TextField(blank=True)
    state = models.TextField(blank=True, help_text="The client's own state string, returned as given.")
    image_url = models.TextField(blank=True)
    image_urls = models.JSONField(default=list, blank=True)
    buttons = models.JSONField(default=list, blank=True)
    properties = models.JSONField(default=dict, blank=True)
    fail_reason = models.TextField(blank=True)
    price = MoneyField(default=0, help_text="The action's price (group multiplier applied).")
    charged = MoneyField(default=0, help_text="What the submit charged (when the upstream accepted it).")
    refunded = MoneyField(default=0, help_text="What was given back (once, on FAILURE, CANCEL or timeout).")
    notify_hook = models.TextField(blank=True, help_text="The client's notifyHook URL.")
    submit_request_id = models.CharField(max_length=64, blank=True)
    submitted_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    refreshed_at = models.DateTimeField(help_text="When the upstream's view was last read.")

    class Meta:
        ordering = ["-submitted_at"]
        indexes = [
            models.Index(fields=["user", "-submitted_at"]),
            models.Index(fields=["status", "refreshed_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.task_id} ({self.status})"

    @property
    def final(self) -> bool:
        return self.status in self.FINAL
