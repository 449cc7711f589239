"""Stored responses: per-user reads and deletes, and the retention purge."""

from __future__ import annotations

from datetime import timedelta

from django.test import override_settings
from django.utils import timezone

from conversations import selectors, services, tasks
from conversations.models import StoredResponse
from tests import factories


def _store(user, response_id: str, days_old: int = 0) -> StoredResponse:
    return services.stored_response_create(
        response_id=response_id,
        user_id=user.id,
        api_key_id=None,
        model="m",
        response={"id": response_id, "object": "response"},
        input_items=[{"id": "msg_1", "type": "message", "role": "user", "content": []}],
        messages=[{"role": "user", "content": "hi"}],
        created_at=timezone.now() - timedelta(days=days_old),
    )


def test_reads_and_deletes_are_per_user(db):
    alice, bob = factories.UserFactory(username="alice"), factories.UserFactory(username="bob")
    _store(alice, "resp_a")
    assert selectors.stored_response_get(user_id=alice.id, response_id="resp_a").messages == [
        {"role": "user", "content": "hi"}
    ]
    assert selectors.stored_response_get(user_id=bob.id, response_id="resp_a") is None
    assert services.stored_response_delete(user_id=bob.id, response_id="resp_a") is False
    assert services.stored_response_delete(user_id=alice.id, response_id="resp_a") is True
    assert not StoredResponse.objects.exists()


def test_purge_keeps_what_is_within_the_retention(db):
    user = factories.UserFactory()
    for index in range(5):
        _store(user, f"resp_old{index}", days_old=40)
    _store(user, "resp_new", days_old=1)
    assert services.stored_responses_purge(older_than_days=0) == 0  # 0 keeps everything
    assert services.stored_responses_purge(older_than_days=30, batch_size=2) == 5
    assert list(StoredResponse.objects.values_list("response_id", flat=True)) == ["resp_new"]
    with override_settings(RESPONSES_RETENTION_DAYS=0):
        assert tasks.purge_responses() == 0
    _store(user, "resp_old", days_old=40)
    with override_settings(RESPONSES_RETENTION_DAYS=30):
        assert tasks.purge_responses() == 1
