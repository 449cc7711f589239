"""Reads on stored responses: always for one user (another user's id does not exist)."""

from __future__ import annotations

from .models import StoredResponse, UpstreamResponse


def stored_response_get(*, user_id: int, response_id: str) -> StoredResponse | None:
    return StoredResponse.objects.filter(response_id=response_id, user_id=user_id).first()


def upstream_response_get(*, user_id: int, response_id: str) -> UpstreamResponse | None:
    return UpstreamResponse.objects.filter(response_id=response_id, user_id=user_id).first()
