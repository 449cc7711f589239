"""State of the Responses API (``/v1/responses``): the responses a user asked the gateway
to keep (``store``, the API's default), so that ``previous_response_id`` can continue a
conversation on providers that keep no state, and so that a response, its input items
and its deletion are served per user."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class StoredResponse(models.Model):
    response_id = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    api_key = models.ForeignKey(
        "keys.APIKey", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    model = models.CharField(max_length=200)
    previous_response_id = models.CharField(max_length=64, blank=True)
    response = models.JSONField(help_text="The Response object as the client received it.")
    input_items = models.JSONField(default=list, help_text="This request's input items (with ids).")
    messages = models.JSONField(
        default=list,
        help_text="The whole conversation up to and including this answer, as chat messages "
        "(what a follow-up with previous_response_id is sent upstream after).",
    )
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.response_id


class UpstreamResponse(models.Model):
    """A response a Responses-native upstream made and keeps itself (passed through with
    ``store``): which provider holds it and for which user. A ``previous_response_id``
    follow-up is routed to that provider, and retrieve / delete / input_items are
    forwarded to it; another user's id does not exist for this one."""

    response_id = models.CharField(max_length=200, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    api_key = models.ForeignKey(
        "keys.APIKey", null=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    provider = models.ForeignKey(
        "providers.Provider", on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    model = models.CharField(max_length=200, help_text="The model the client asked for.")
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.response_id
