"""Web search on /v1/messages, end to end with the anthropic SDK: ``"web_search": true`` and
Anthropic's server tool (web_search_20250305 and later) over an OpenAI-type upstream (the
gateway runs the searches against the fake SearXNG), and the server tool passed through to
an Anthropic-type upstream."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from tests.conftest import wait_usage
from tests.test_relay_web_search import _searxng_session, searxng, upstream_sum  # noqa: F401

MODEL = "claude-like"
SERVER_TOOL = {"type": "web_search_20250305", "name": "web_search"}
CALL = {"tool_call": {"name": "web_search", "arguments": {"query": "python language"}}}


@pytest.fixture
def client(gateway, world, fake, searxng):  # noqa: F811
    world.route(world.provider(fake), MODEL)
    key = world.key(world.user("carol"))
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=20)


def create(client, **extra):
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "what is python?"}], **extra
    )
    return raw.parse(), raw.headers["x-request-id"]


def stream(client, **extra):
    with client.messages.stream(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "what is python?"}], **extra
    ) as events:
        seen = [event.type for event in events]
        return events.get_final_message(), seen


def test_web_search_true_answers_a_plain_message_and_is_never_forwarded(client, fake, searxng):  # noqa: F811
    page = searxng.page_url("python")
    reply = f"Python is a language, see {page} for more."
    fake.script({"tool_call": {"name": "search", "arguments": {"query": "python"}}}, {"reply": reply})
    message, rid = create(client, extra_body={"web_search": True})
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == reply
    assert message.stop_reason == "end_turn"
    assert len(fake.requests) == 2 and all("web_search" not in r["json"] for r in fake.requests)
    assert [t["function"]["name"] for t in fake.requests[0]["json"]["tools"]] == ["search", "news", "crawler"]
    prompt, completion = upstream_sum(fake)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (prompt, completion)
    log = wait_usage(rid)
    assert (log.prompt_tokens, log.completion_tokens) == (prompt, completion)


def test_web_search_true_streams_with_pings_while_searching(gateway, client, fake, searxng, settings):  # noqa: F811
    settings.WEB_SEARCH_KEEPALIVE = 0.2
    searxng.script({"stall": 1.0})
    fake.script({"tool_call": {"name": "search", "arguments": {"query": "python"}}}, {"reply": "Found it."})
    body = {
        "model": MODEL,
        "max_tokens": 100,
        "stream": True,
        "web_search": True,
        "messages": [{"role": "user", "content": "what is python?"}],
    }
    headers = {"x-api-key": client.api_key, "anthropic-version": "2023-06-01"}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/messages", json=body, headers=headers, timeout=20
    ) as response:
        events = [line.removeprefix("event: ") for line in response.iter_lines() if line.startswith("event:")]
    # the SDK skips pings: here they are seen on the wire, before the answer's text
    assert events.count("ping") >= 3 and max(i for i, e in enumerate(events) if e == "ping") < events.index(
        "content_block_start"
    )
    assert events[0] == "message_start" and events[-1] == "message_stop"
    # and the SDK reads the same kind of stream whole
    fake.script({"tool_call": {"name": "search", "arguments": {"query": "python"}}}, {"reply": "Found it."})
    message, seen = stream(client, extra_body={"web_search": True})
    assert message.content[0].text == "Found it."
    assert (
        message.usage.output_tokens
        == fake.requests[2]["usage"]["completion_tokens"] + fake.requests[3]["usage"]["completion_tokens"]
    )


def test_server_tool_over_an_openai_upstream(client, fake, searxng):  # noqa: F811
    page = searxng.page_url("python")
    reply = f"Python is a language ({page})."
    fake.script(CALL, {"reply": reply})
    message, rid = create(client, tools=[{**SERVER_TOOL, "max_uses": 3}])
    assert [b.type for b in message.content] == ["server_tool_use", "web_search_tool_result", "text"]
    use, result, text = message.content
    assert use.name == "web_search" and use.input == {"query": "python language"}
    assert use.id.startswith("srvtoolu_") and result.tool_use_id == use.id
    assert [r.url for r in result.content] == [page, searxng.page_url("django")]
    assert result.content[0].title == "Python (programming language)"
    assert text.text == reply
    (citation,) = text.citations
    assert citation.type == "web_search_result_location" and citation.url == page
    assert citation.cited_text.startswith("Python is a high-level")
    assert message.usage.server_tool_use.web_search_requests == 1
    # the model was offered the one search function, never the server tool itself
    first = fake.requests[0]["json"]
    assert [t["function"]["name"] for t in first["tools"]] == ["web_search"]
    tool_message = fake.requests[1]["json"]["messages"][-1]
    assert json.loads(tool_message["content"])["results"][0]["url"] == page
    log = wait_usage(rid)
    assert log.status_code == 200


def test_server_tool_streamed(client, fake, searxng):  # noqa: F811
    page = searxng.page_url("python")
    fake.script(CALL, {"reply": f"See {page} now."})
    message, seen = stream(client, tools=[SERVER_TOOL])
    assert [b.type for b in message.content] == ["server_tool_use", "web_search_tool_result", "text"]
    assert message.content[1].content[0].url == page
    assert message.content[2].text == f"See {page} now."
    assert message.content[2].citations[0].url == page
    assert "citation" in seen
    assert message.usage.server_tool_use.web_search_requests == 1


def test_server_tool_max_uses_and_domains(client, fake, searxng):  # noqa: F811
    again = {"tool_call": {"name": "web_search", "arguments": {"query": "again"}}}
    fake.script(CALL, again, {"reply": "done"})
    message, _ = create(client, tools=[{**SERVER_TOOL, "max_uses": 1}])
    kinds = [b.type for b in message.content]
    assert kinds == ["server_tool_use", "web_search_tool_result"] * 2 + ["text"]
    assert message.content[3].content.error_code == "max_uses_exceeded"
    assert message.usage.server_tool_use.web_search_requests == 1
    assert len(searxng.requests) == 1
    fake.script(CALL, {"reply": "nothing"})
    message, _ = create(client, tools=[{**SERVER_TOOL, "blocked_domains": ["127.0.0.1"]}])
    assert message.content[1].content == []
    fake.script(CALL, {"reply": "nothing"})
    message, _ = create(client, tools=[{**SERVER_TOOL, "allowed_domains": ["example.org"]}])
    assert message.content[1].content == []
    with pytest.raises(anthropic.BadRequestError, match="together"):
        create(client, tools=[{**SERVER_TOOL, "allowed_domains": ["a.org"], "blocked_domains": ["b.org"]}])


def test_server_tool_is_passed_through_to_an_anthropic_upstream(gateway, world, fake, searxng):  # noqa: F811
    world.route(world.provider(fake, type="anthropic"), MODEL)
    key = world.key(world.user("dave"))
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=20)
    message, _ = create(client, tools=[SERVER_TOOL])
    assert message.content[0].type == "text"
    assert fake.requests[0]["json"]["tools"] == [SERVER_TOOL]
    assert not searxng.requests


def test_web_search_true_over_an_anthropic_upstream(gateway, world, fake, searxng):  # noqa: F811
    """The loop runs over the Anthropic-type route too (through its chat translation): the
    gateway's tools are sent as Anthropic tools, the field itself never is."""
    world.route(world.provider(fake, type="anthropic"), MODEL)
    key = world.key(world.user("ivan"))
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=20)
    page = searxng.page_url("python")
    search = {"tool_call": {"name": "search", "arguments": {"query": "python"}}}
    fake.script(search, {"reply": f"See {page}."})
    message, _ = create(client, extra_body={"web_search": True})
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == f"See {page}."
    first, second = (r["json"] for r in fake.requests)
    assert [r["path"] for r in fake.requests] == ["/v1/messages"] * 2
    assert [t["name"] for t in first["tools"]] == ["search", "news", "crawler"]
    assert "web_search" not in first and "web_search" not in second
    assert second["messages"][-1]["content"][0]["type"] == "tool_result"
    assert message.usage.output_tokens == sum(r["usage"]["output_tokens"] for r in fake.requests)


def test_server_tool_without_a_search_backend_is_dropped_as_before(client, fake, settings):
    settings.WEB_SEARCH_URL = ""
    message, _ = create(client, tools=[SERVER_TOOL])
    assert [b.type for b in message.content] == ["text"]
    assert "tools" not in fake.requests[0]["json"]
    with pytest.raises(anthropic.BadRequestError, match="not configured"):
        create(client, extra_body={"web_search": True})  # asked for explicitly: refused
