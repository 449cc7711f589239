"""/v1/messages (Anthropic's protocol) for any model, driven by the official anthropic SDK."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from tests.conftest import wait_usage

REPLY = "This is a fake answer from the fake upstream."


def client_for(gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=20)


@pytest.fixture(params=["openai", "anthropic"])
def upstream(request, world, fake):
    """The same tests against an OpenAI upstream (translated) and an Anthropic one
    (passed through)."""
    provider = world.provider(fake, type=request.param, api_key="sk-upstream")
    world.route(provider, "claude-like")
    return {"type": request.param, "key": world.key(world.user("carol")), "fake": fake}


def test_message_json(gateway, upstream):
    client = client_for(gateway, upstream["key"])
    raw = client.messages.with_raw_response.create(
        model="claude-like",
        max_tokens=100,
        system=[{"type": "text", "text": "be brief"}],
        messages=[{"role": "user", "content": "hello there"}],
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].text == REPLY
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 9
    sent = upstream["fake"].requests[-1]
    if upstream["type"] == "anthropic":
        assert sent["path"] == "/v1/messages" and sent["headers"]["x-api-key"] == "sk-upstream"
        assert sent["json"]["system"] == [{"type": "text", "text": "be brief"}]
    else:
        assert sent["path"] == "/v1/chat/completions"
        assert sent["json"]["messages"][0] == {"role": "system", "content": "be brief"}
    log = wait_usage(raw.headers["x-request-id"])
    assert log.request_type == "messages" and log.completion_tokens == 9 and log.cost > 0


def test_message_stream(gateway, upstream):
    client = client_for(gateway, upstream["key"])
    with client.messages.stream(
        model="claude-like", max_tokens=100, messages=[{"role": "user", "content": "stream it"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == REPLY
    assert final.usage.output_tokens == 9 and final.stop_reason == "end_turn"


def test_message_tool_use_round_trip(gateway, upstream):
    client = client_for(gateway, upstream["key"])
    tools = [{"name": "lookup", "description": "Look up", "input_schema": {"type": "object"}}]
    upstream["fake"].script({"tool_call": True})
    first = client.messages.create(
        model="claude-like", max_tokens=100, tools=tools, messages=[{"role": "user", "content": "weather"}]
    )
    tool_use = next(block for block in first.content if block.type == "tool_use")
    assert (
        first.stop_reason == "tool_use"
        and tool_use.name == "lookup"
        and tool_use.input == {"query": "weather"}
    )
    second = client.messages.create(
        model="claude-like",
        max_tokens=100,
        tools=tools,
        messages=[
            {"role": "user", "content": "weather"},
            {
                "role": "assistant",
                "content": [block.model_dump(exclude_none=True) for block in first.content],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}],
            },
        ],
    )
    assert second.content[0].text == REPLY


def test_message_errors_use_anthropic_shapes(gateway, upstream):
    with pytest.raises(anthropic.AuthenticationError):
        client_for(gateway, "sk-gw-nope").messages.create(
            model="claude-like", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    client = client_for(gateway, upstream["key"])
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="missing", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    response = httpx.post(
        f"{gateway.url}/v1/messages",
        headers={"x-api-key": upstream["key"], "anthropic-version": "2023-06-01"},
        json={"model": "claude-like", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "max_tokens: field required (a positive integer)",
        },
    }
    upstream["fake"].script({"status": 500})
    with pytest.raises(anthropic.APIStatusError) as failed:
        client.messages.create(
            model="claude-like", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert failed.value.status_code == 502 and failed.value.body["type"] == "error"


def test_cut_stream_ends_with_an_anthropic_error_event(gateway, upstream):
    upstream["fake"].script({"cut_after": 3})
    response = httpx.post(
        f"{gateway.url}/v1/messages",
        headers={"x-api-key": upstream["key"], "anthropic-version": "2023-06-01"},
        json={
            "model": "claude-like",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        },
        timeout=20,
    )
    events = [line for line in response.text.splitlines() if line.startswith("event:")]
    assert events[0] == "event: message_start" and events[-1] == "event: error"
    assert "event: message_stop" not in events
    log = wait_usage(response.headers["x-request-id"])
    assert log.status_code == 502 and log.completion_tokens > 0 and log.usage_estimated


def test_count_tokens(gateway, upstream):
    client = client_for(gateway, upstream["key"])
    counted = client.messages.count_tokens(
        model="claude-like", messages=[{"role": "user", "content": "hello world"}]
    )
    sent = upstream["fake"].requests
    if upstream["type"] == "anthropic":
        # the provider counts its own tokens: the fake's count, from the fake
        assert sent and sent[-1]["path"] == "/v1/messages/count_tokens"
        assert sent[-1]["json"]["model"] == "claude-like" and counted.input_tokens == 2
    else:
        assert not sent and counted.input_tokens > 2  # counted here (cl100k)
