"""The operator's web-search defaults: a key or a model set to search runs the gateway's loop
for requests that do not say "web_search"; a request's own ``false`` wins; without a
configured backend a default is ignored (never a 400 the client did not ask for)."""

from __future__ import annotations

import httpx
import pytest

from providers.models import Model
from tests.test_relay_web_search import _searxng_session, searxng  # noqa: F401

SEARCH = {"tool_call": {"name": "search", "arguments": {"query": "python language"}}}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "what is python?"}]}


@pytest.fixture
def relay(gateway, world, fake, searxng):  # noqa: F811
    world.route(world.provider(fake), "gpt-4o-mini")
    return world


def post(gateway, key, path, body):
    return httpx.post(
        f"{gateway.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=20
    )


def offered(request) -> list[str]:
    return [tool["function"]["name"] for tool in request["json"].get("tools", [])]


def test_a_key_set_to_search_runs_the_loop_unless_the_request_says_false(gateway, relay, fake, searxng):  # noqa: F811
    key = relay.key(relay.user("alice"), web_search=True)
    page = searxng.page_url("python")
    fake.script(SEARCH, {"reply": f"Python, see {page}."})
    answer = post(gateway, key, "/v1/chat/completions", CHAT)
    assert answer.status_code == 200, answer.text
    message = answer.json()["choices"][0]["message"]
    assert (
        message["content"] == f"Python, see {page}."
        and message["annotations"][0]["url_citation"]["url"] == page
    )
    assert len(fake.requests) == 2 and offered(fake.requests[0]) == ["search", "news", "crawler"]
    assert searxng.requests[0]["query"]["q"] == "python language"

    fake.reset()
    plain = post(gateway, key, "/v1/chat/completions", {**CHAT, "web_search": False})
    assert plain.status_code == 200 and len(fake.requests) == 1 and offered(fake.requests[0]) == []
    assert "web_search" not in fake.requests[0]["json"]

    # another key of the same user, without the default: forwarded as sent
    fake.reset()
    other = relay.key(relay.user("bob"))
    assert post(gateway, other, "/v1/chat/completions", CHAT).status_code == 200
    assert len(fake.requests) == 1 and offered(fake.requests[0]) == []


def test_a_model_set_to_search_runs_the_loop_on_chat_completions_and_messages(gateway, relay, fake, searxng):  # noqa: F811
    Model.objects.filter(slug="gpt-4o-mini").update(web_search=True)
    key = relay.key(relay.user("alice"))
    page = searxng.page_url("python")
    fake.script(SEARCH, {"reply": f"Python, see {page}."})
    completion = post(gateway, key, "/v1/completions", {"model": "gpt-4o-mini", "prompt": "what is python?"})
    assert completion.status_code == 200, completion.text
    assert completion.json()["choices"][0]["text"] == f"Python, see {page}."
    assert len(fake.requests) == 2 and offered(fake.requests[0]) == ["search", "news", "crawler"]

    fake.reset()
    fake.script(SEARCH, {"reply": f"Python, see {page}."})
    message = httpx.post(
        f"{gateway.url}/v1/messages",
        json={
            "model": "gpt-4o-mini",
            "max_tokens": 200,
            "messages": [{"role": "user", "content": "python?"}],
        },
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        timeout=20,
    )
    assert message.status_code == 200, message.text
    assert message.json()["content"][-1]["text"] == f"Python, see {page}."
    assert len(fake.requests) == 2 and offered(fake.requests[0]) == ["search", "news", "crawler"]

    # two choices cannot be searched: the default steps aside instead of refusing
    fake.reset()
    two = post(gateway, key, "/v1/chat/completions", {**CHAT, "n": 2})
    assert two.status_code == 200 and offered(fake.requests[0]) == []


def test_a_default_without_a_backend_is_ignored_but_an_explicit_request_is_refused(
    gateway, relay, fake, settings
):
    settings.WEB_SEARCH_URL = ""
    key = relay.key(relay.user("alice"), web_search=True)
    plain = post(gateway, key, "/v1/chat/completions", CHAT)
    assert plain.status_code == 200 and len(fake.requests) == 1 and offered(fake.requests[0]) == []
    asked = post(gateway, key, "/v1/chat/completions", {**CHAT, "web_search": True})
    assert asked.status_code == 400 and asked.json()["error"]["code"] == "web_search_off"


def test_operators_set_the_defaults_through_the_management_api(relay):
    from tests.api.conftest import client_for

    staff_api_client = client_for(relay.user("operator", is_staff=True))
    alice = relay.user("alice")
    created = staff_api_client.post(
        "/api/admin/keys/", {"user": alice.pk, "name": "searching", "web_search": True}, format="json"
    )
    assert created.status_code == 201, created.content
    assert created.json()["web_search"] is True
    model = Model.objects.get(slug="gpt-4o-mini")
    changed = staff_api_client.patch(f"/api/admin/models/{model.pk}/", {"web_search": True}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["web_search"] is True and Model.objects.get(pk=model.pk).web_search
