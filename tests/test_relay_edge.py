"""The relay's edge: the route table, capabilities, the typed usage event, config stamps
on commit, and the periodic jobs of the embedded default."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from billing.events import UsageEvent
from providers.models import Provider
from relay.config import VERSION_KEY


def post(gateway, path: str, key: str, body: dict, **headers) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}{path}", json=body, headers={"authorization": f"Bearer {key}", **headers}, timeout=20
    )


def test_wrong_method_is_405_with_allow_in_the_paths_protocol(gateway, world):
    key = world.key()
    openai_style = httpx.get(f"{gateway.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"})
    assert openai_style.status_code == 405 and openai_style.headers["allow"] == "POST"
    assert openai_style.json()["error"]["type"] == "invalid_request_error"
    anthropic_style = httpx.get(f"{gateway.url}/v1/messages", headers={"x-api-key": key})
    assert anthropic_style.status_code == 405
    assert anthropic_style.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "Use POST for /v1/messages."},
    }
    unknown = httpx.post(f"{gateway.url}/v1/nothing-here", headers={"authorization": f"Bearer {key}"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_url"


def test_root_answers_head_and_get_without_a_key(gateway):
    head = httpx.head(f"{gateway.url}/")
    assert head.status_code == 200 and head.content == b""
    got = httpx.get(f"{gateway.url}/")
    assert got.status_code == 200 and got.json()["api"] == "/v1"


def test_a_capability_no_provider_has_is_a_clear_400(gateway, world, fake):
    provider = world.provider(fake, type="anthropic")
    world.route(provider, "claude-only")
    key = world.key()
    answer = post(gateway, "/v1/embeddings", key, {"model": "claude-only", "input": "hello"})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "unsupported_capability" and error["param"] == "model"
    assert "does not support embeddings" in error["message"] and "anthropic" in error["message"]
    assert fake.requests == []  # never sent anywhere


def test_usage_event_round_trips_through_json_and_ignores_unknown_fields():
    event = UsageEvent.coerce({"request_id": "r1", "ts": 1.5, "prompt_tokens": 3, "cost": 7})
    assert (event.request_id, event.prompt_tokens, event.cost, event.status_code) == ("r1", 3, 7, 200)
    payload = orjson.loads(event.to_json())
    payload["added_by_a_newer_version"] = True
    again = UsageEvent.coerce(orjson.dumps(payload))
    assert again == event and again.tokens == 3


@pytest.mark.django_db(transaction=True)
def test_config_stamp_moves_on_commit_not_before(user):
    from keys.services import api_key_create

    created = api_key_create(user=user)
    before = cache.get(VERSION_KEY)
    with transaction.atomic():
        created.key.status = "revoked"
        created.key.save()
        # another worker reloading now would still read the committed (active) row:
        # the stamp must not move before the commit
        assert cache.get(VERSION_KEY) == before
    assert cache.get(VERSION_KEY) != before


@pytest.mark.skipif(bool(settings.REDIS_URL), reason="the embedded default (no Redis, no Celery beat)")
def test_embedded_default_reenables_a_provider_that_passes_its_probe(gateway, world, fake):
    provider = world.provider(fake)
    world.route(provider, "gpt-4o-mini")
    key = world.key()
    fake.script({"status": 401})
    answer = post(
        gateway,
        "/v1/chat/completions",
        key,
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code == 502
    deadline = time.monotonic() + 5
    while provider.status != Provider.Status.AUTO_DISABLED and time.monotonic() < deadline:
        time.sleep(0.05)
        provider.refresh_from_db()
    assert provider.status == Provider.Status.AUTO_DISABLED
    schedule = settings.CELERY_BEAT_SCHEDULE
    saved = schedule["check-providers"]
    schedule["check-providers"] = {**saved, "schedule": 0.5}  # no Celery here: the relay runs it
    try:
        deadline = time.monotonic() + 10
        while provider.status != Provider.Status.ENABLED and time.monotonic() < deadline:
            time.sleep(0.1)
            provider.refresh_from_db()
    finally:
        schedule["check-providers"] = saved
    assert provider.status == Provider.Status.ENABLED
    assert any(r["path"] == "/v1/models" for r in fake.requests)  # the probe reached the upstream


@pytest.mark.parametrize("trusted", [False, True])
def test_x_forwarded_for_counts_only_when_trusted(gateway, world, fake, trusted, settings):
    """Behind a same-host forwarder every peer is 127.0.0.1: a spoofed X-Forwarded-For must
    not move the client address unless TRUST_X_FORWARDED_FOR says so (uvicorn's own
    proxy-header handling would trust it from loopback)."""
    provider = world.provider(fake)
    world.route(provider, "gpt-4o-mini")
    key = world.key(allowed_ips=["10.0.0.0/8"])
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    settings.TRUST_X_FORWARDED_FOR = trusted  # pytest-django's override: restored after the test
    answer = post(gateway, "/v1/chat/completions", key, body, **{"x-forwarded-for": "10.1.2.3"})
    if trusted:
        assert answer.status_code == 200
    else:
        assert answer.status_code == 403
        assert answer.json()["error"]["message"] == "This API key may not be used from 127.0.0.1."
