"""The Responses API's web_search tool over a chat-only upstream, run by the gateway (openai
SDK end to end, fake SearXNG), and passed through to a native Responses upstream."""

from __future__ import annotations

import openai
import pytest

from tests.test_relay_web_search import SEARCH, _searxng_session, searxng, upstream_sum  # noqa: F401


@pytest.fixture
def client(gateway, world, fake, searxng):  # noqa: F811
    world.route(world.provider(fake), "gpt-4o-mini")
    key = world.key(world.user("erin"))
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


def test_web_search_tool_runs_on_a_chat_route(client, fake, searxng):  # noqa: F811
    page = searxng.page_url("python")
    reply = f"Python is a language, see {page} for more."
    fake.script(SEARCH, {"reply": reply})
    raw = client.responses.with_raw_response.create(
        model="gpt-4o-mini", input="what is python?", tools=[{"type": "web_search"}], store=False
    )
    assert "x-gateway-dropped-tools" not in raw.headers
    response = raw.parse()
    assert [item.type for item in response.output] == ["web_search_call", "message"]
    call, message = response.output
    assert call.status == "completed" and call.action.query == "python language"
    assert call.action.sources[0].url == page
    assert response.output_text == reply
    (annotation,) = message.content[0].annotations
    assert annotation.type == "url_citation" and annotation.url == page
    assert reply[annotation.start_index : annotation.end_index] == page
    prompt, completion = upstream_sum(fake)
    assert (response.usage.input_tokens, response.usage.output_tokens) == (prompt, completion)
    assert [t["function"]["name"] for t in fake.requests[0]["json"]["tools"]] == ["search", "news", "crawler"]


def test_web_search_tool_streamed(client, fake, searxng):  # noqa: F811
    page = searxng.page_url("python")
    reply = f"See {page} today."
    fake.script(SEARCH, {"reply": reply})
    events = list(
        client.responses.create(
            model="gpt-4o-mini",
            input="what is python?",
            tools=[{"type": "web_search_preview"}],
            stream=True,
            store=False,
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.annotation.added" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert [item.type for item in final.output] == ["web_search_call", "message"]
    assert final.output_text == reply
    assert final.output[1].content[0].annotations[0].url == page
    _, completion = upstream_sum(fake)
    assert final.usage.output_tokens == completion


def test_without_a_backend_the_tool_is_still_dropped_and_named(client, fake, settings):
    settings.WEB_SEARCH_URL = ""
    raw = client.responses.with_raw_response.create(
        model="gpt-4o-mini", input="hi", tools=[{"type": "web_search"}], store=False
    )
    assert raw.headers["x-gateway-dropped-tools"] == "web_search"
    assert len(fake.requests) == 1 and "tools" not in fake.requests[0]["json"]


def test_native_responses_route_gets_the_tool_passed_through(gateway, world, fake, searxng):  # noqa: F811
    world.route(world.provider(fake, responses_api=True), "gpt-4o-mini")
    key = world.key(world.user("frank"))
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)
    client.responses.create(model="gpt-4o-mini", input="hi", tools=[{"type": "web_search"}], store=False)
    (request,) = fake.requests
    assert request["path"] == "/v1/responses" and request["json"]["tools"] == [{"type": "web_search"}]
    assert not searxng.requests
