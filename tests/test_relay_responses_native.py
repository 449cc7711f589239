"""/v1/responses passed through to upstreams that serve the Responses API themselves
(``Provider.responses_api``), driven by the official openai SDK against the fake
upstream's ``/v1/responses``: the body as sent but for the model, usage billed once,
state kept upstream (follow-ups routed to the provider that made the response, retrieve /
delete forwarded to it, per user), encrypted reasoning round-tripped to the same family
only, and mixed models (native + translated routes) with failover between the two."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from billing.models import BillingRecord, UsageLog
from conversations.models import StoredResponse, UpstreamResponse
from tests.conftest import wait_usage

REPLY = "This is a fake answer from the fake upstream."
MODEL = "native-model"
UPSTREAM = "gpt-upstream-name"
TOOLS = [
    {
        "type": "function",
        "name": "lookup",
        "description": "Look something up.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        "strict": False,
    }
]
TOOL_TURN = '[[fake:{"tool_call": true, "after_tool_result": {"reply": "It is {tool_result} today"}}]]'
REASONING = '[[fake:{"reasoning": "let me think"}]]'


def client_for(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


def native_provider(world, fake, **fields):
    return world.provider(fake, type=fields.pop("type", "openai"), responses_api=True, **fields)


def sse_events(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        data = json.loads(lines[1][6:])
        assert data["type"] == lines[0][7:]
        events.append(data)
    return events


def responses_calls(fake) -> list[dict]:
    return [r for r in fake.requests if r["path"].endswith("/responses")]


def assert_billed_once(request_id: str, user, start: int, usage: dict) -> UsageLog:
    log = wait_usage(request_id)
    assert (log.prompt_tokens, log.completion_tokens, log.cached_tokens) == (
        usage["input_tokens"],
        usage["output_tokens"],
        usage["input_tokens_details"]["cached_tokens"],
    )
    assert log.request_type == "responses" and not log.usage_estimated and log.cost > 0
    assert UsageLog.objects.filter(request_id=request_id).count() == 1
    (charge,) = BillingRecord.objects.filter(request_id=request_id)
    user.refresh_from_db()
    assert charge.amount == -log.cost and charge.balance_after == user.balance == start - log.cost
    return log


@pytest.fixture
def native(world, fake):
    provider = native_provider(world, fake, api_key="sk-upstream")
    world.route(provider, MODEL, upstream_model=UPSTREAM)
    user = world.user("nina")
    return {"provider": provider, "key": world.key(user), "user": user, "fake": fake}


# --------------------------------------------------------------------------- create


def test_passthrough_json_body_model_and_billing(gateway, native):
    client = client_for(gateway, native["key"])
    start = native["user"].balance
    raw = client.responses.with_raw_response.create(
        model=MODEL,
        input="hello there [[cached:2]]",
        instructions="be brief",
        metadata={"a": "b"},
        extra_body={"client_metadata": {"x": 1}, "prompt_cache_key": "k1"},
    )
    response = raw.parse()
    assert response.model == MODEL and response.output_text == REPLY and response.status == "completed"
    (sent,) = responses_calls(native["fake"])
    assert sent["path"] == "/v1/responses" and sent["headers"]["authorization"] == "Bearer sk-upstream"
    assert sent["json"] == {
        "model": UPSTREAM,
        "input": "hello there [[cached:2]]",
        "instructions": "be brief",
        "metadata": {"a": "b"},
        "client_metadata": {"x": 1},
        "prompt_cache_key": "k1",
    }
    usage = response.usage.model_dump()
    assert usage["input_tokens_details"]["cached_tokens"] == 2 and usage["output_tokens"] == 9
    log = assert_billed_once(raw.headers["x-request-id"], native["user"], start, usage)
    assert log.provider_id == native["provider"].pk and log.model_upstream == UPSTREAM and not log.stream
    # kept upstream: the gateway notes who holds it, and keeps no copy of its own
    assert UpstreamResponse.objects.get(response_id=response.id).provider_id == native["provider"].pk
    assert not StoredResponse.objects.filter(response_id=response.id).exists()


def test_passthrough_stream_bytes_model_and_billing(gateway, native):
    start = native["user"].balance
    response = httpx.post(
        f"{gateway.url}/v1/responses",
        headers={"authorization": f"Bearer {native['key']}"},
        json={"model": MODEL, "input": "stream it [[cached:1]]", "stream": True},
        timeout=20,
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert "[DONE]" not in response.text and UPSTREAM not in response.text
    assert {e["response"]["model"] for e in events if "response" in e} == {MODEL}
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == REPLY
    (sent,) = responses_calls(native["fake"])
    assert sent["json"]["stream"] is True and sent["json"]["model"] == UPSTREAM
    log = assert_billed_once(
        response.headers["x-request-id"], native["user"], start, events[-1]["response"]["usage"]
    )
    assert log.stream


def test_sdk_stream_helper_and_tool_round_trip(gateway, native):
    client = client_for(gateway, native["key"])
    with client.responses.stream(model=MODEL, input=f"weather? {TOOL_TURN}", tools=TOOLS) as stream:
        kinds = [event.type for event in stream]
        first = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "lookup" and json.loads(call.arguments) == {"query": f"weather? {TOOL_TURN}"}
    second = client.responses.create(
        model=MODEL,
        tools=TOOLS,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert second.output_text == "It is sunny today" and second.model == MODEL
    sent = responses_calls(native["fake"])[-1]["json"]
    # passed through: the upstream holds the history, the gateway sends only the new input
    assert sent["previous_response_id"] == first.id and len(sent["input"]) == 1


def test_previous_response_id_goes_to_the_provider_that_made_it(gateway, world, fake, fake_b):
    one, two = native_provider(world, fake), native_provider(world, fake_b)
    world.route(one, MODEL)
    world.route(two, MODEL)
    key = world.key(world.user("olga"))
    client = client_for(gateway, key)
    # each conversation continues where it started, whatever the balancer picks
    for turn in range(4):
        first = client.responses.create(model=MODEL, input=f"start {turn}")
        maker = fake if any(c["json"]["input"] == f"start {turn}" for c in responses_calls(fake)) else fake_b
        other = fake_b if maker is fake else fake
        before = len(responses_calls(other))
        for step in range(3):
            follow = client.responses.create(model=MODEL, input=f"more {step}", previous_response_id=first.id)
            assert follow.output_text == REPLY
        assert len(responses_calls(other)) == before
        assert [c["json"].get("previous_response_id") for c in responses_calls(maker)][-3:] == [first.id] * 3


def test_retrieve_delete_and_isolation_between_users(gateway, world, native):
    client = client_for(gateway, native["key"])
    created = client.responses.create(model=MODEL, input="keep me")
    intruder = client_for(gateway, world.key(world.user("mallory")))
    with pytest.raises(openai.NotFoundError):
        intruder.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        intruder.responses.input_items.list(created.id)
    with pytest.raises(openai.NotFoundError):
        intruder.responses.delete(created.id)
    with pytest.raises(openai.BadRequestError) as refused:
        intruder.responses.create(model=MODEL, input="steal", previous_response_id=created.id)
    assert refused.value.code == "previous_response_not_found"
    calls_before = len(native["fake"].requests)
    # the owner's retrieve / input_items / delete are forwarded to the provider that keeps it
    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.model == MODEL and fetched.output_text == REPLY
    items = client.responses.input_items.list(created.id)
    assert [item.content for item in items.data] == ["keep me"]
    client.responses.delete(created.id)
    paths = [r["path"] for r in native["fake"].requests[calls_before:]]
    assert paths == [f"/v1/responses/{created.id}", f"/v1/responses/{created.id}/input_items"] + [
        f"/v1/responses/{created.id}"
    ]
    assert not UpstreamResponse.objects.filter(response_id=created.id).exists()
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_store_false_keeps_no_record(gateway, native):
    client = client_for(gateway, native["key"])
    created = client.responses.create(model=MODEL, input="forget me", store=False)
    assert created.output_text == REPLY
    assert not UpstreamResponse.objects.filter(response_id=created.id).exists()


def test_upstream_errors_in_openai_shape(gateway, native):
    client = client_for(gateway, native["key"])
    forged = {"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": "not-yours"}
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, input=[forged, {"role": "user", "content": "hi"}])
    assert "encrypted content" in refused.value.message


# --------------------------------------------------------------------------- encrypted reasoning


def test_encrypted_reasoning_round_trips_on_native_and_is_dropped_on_translated(gateway, world, fake, fake_b):
    world.route(native_provider(world, fake), MODEL)
    world.route(world.provider(fake_b, type="openai"), "chat-only-model")  # translated to chat
    client = client_for(gateway, world.key(world.user("paula")))
    first = client.responses.create(
        model=MODEL,
        input=f"think {REASONING}",
        include=["reasoning.encrypted_content"],
        reasoning={"summary": "auto"},
        store=False,
    )
    (reasoning,) = [item for item in first.output if item.type == "reasoning"]
    assert reasoning.encrypted_content.startswith("fake-enc:")
    assert first.usage.output_tokens_details.reasoning_tokens == 3
    history = [item.model_dump(exclude_none=True) for item in first.output]
    follow = [{"role": "user", "content": "think"}, *history, {"role": "user", "content": "and then?"}]
    again = client.responses.create(model=MODEL, input=follow, store=False)
    assert again.output_text == REPLY
    sent = responses_calls(fake)[-1]["json"]["input"]
    assert sent[1]["encrypted_content"] == reasoning.encrypted_content  # back to the family that made it
    # the same conversation continued on a translated provider: dropped cleanly, no error
    moved = client.responses.create(model="chat-only-model", input=follow, store=False)
    assert moved.output_text == REPLY
    chat = fake_b.requests[-1]
    assert chat["path"] == "/v1/chat/completions" and "fake-enc:" not in json.dumps(chat["json"])
    assert [m["role"] for m in chat["json"]["messages"]] == ["user", "assistant", "user"]


# --------------------------------------------------------------------------- mixed models


@pytest.mark.parametrize("streamed", [False, True])
def test_mixed_model_fails_over_from_native_to_translated(gateway, world, fake, fake_b, streamed):
    failing = native_provider(world, fake, priority=10)
    translated = world.provider(fake_b, type="openai")
    world.route(failing, MODEL)
    world.route(translated, MODEL)
    fake.script({"status": 500})
    user = world.user("quinn")
    start = user.balance
    response = httpx.post(
        f"{gateway.url}/v1/responses",
        headers={"authorization": f"Bearer {world.key(user)}"},
        json={"model": MODEL, "input": "fail over please", "stream": streamed},
        timeout=20,
    )
    assert response.status_code == 200
    assert [r["path"] for r in fake.requests] == ["/v1/responses"]
    assert [r["path"] for r in fake_b.requests] == ["/v1/chat/completions"]
    if streamed:
        events = sse_events(response.text)
        assert events[-1]["type"] == "response.completed"
        body = events[-1]["response"]
    else:
        body = response.json()
    assert body["model"] == MODEL and body["output"][-1]["content"][0]["text"] == REPLY
    log = assert_billed_once(response.headers["x-request-id"], user, start, body["usage"])
    assert log.provider_id == translated.pk
    assert [t["status"] for t in log.providers_tried] == [500, 200]
    # answered by translation: the gateway keeps it (a follow-up continues from its copy)
    assert StoredResponse.objects.filter(response_id=body["id"]).exists()


def test_translated_conversation_continues_on_a_native_only_model(gateway, world, fake, fake_b):
    """A previous response the gateway translated, continued on a model only a native
    upstream serves: the gateway's copy is replayed as items (no upstream state to use)."""
    world.route(world.provider(fake_b, type="openai"), "chat-only-model")
    world.route(native_provider(world, fake), MODEL)
    client = client_for(gateway, world.key(world.user("rita")))
    first = client.responses.create(model="chat-only-model", input="first question")
    second = client.responses.create(model=MODEL, input="second question", previous_response_id=first.id)
    assert second.output_text == REPLY
    sent = responses_calls(fake)[-1]["json"]
    assert "previous_response_id" not in sent
    texts = json.dumps(sent["input"])
    assert texts.index("first question") < texts.index(REPLY) < texts.index("second question")


def test_azure_native_route(gateway, world, fake):
    provider = native_provider(world, fake, type="azure", api_key="az-key")
    world.route(provider, MODEL, upstream_model="my-deployment")
    client = client_for(gateway, world.key(world.user("sam")))
    created = client.responses.create(model=MODEL, input="hi azure")
    assert created.model == MODEL and created.output_text == REPLY
    (sent,) = responses_calls(fake)
    assert sent["path"] == "/openai/v1/responses" and sent["headers"]["api-key"] == "az-key"
    assert sent["json"]["model"] == "my-deployment"


def test_built_in_tools_reach_a_native_upstream_and_are_dropped_only_by_translation(
    gateway, world, fake, fake_b
):
    world.route(native_provider(world, fake, priority=10), MODEL)
    world.route(world.provider(fake_b, type="openai"), MODEL)
    key = world.key(world.user("tess"))
    body = {"model": MODEL, "input": "search", "tools": [{"type": "web_search"}, *TOOLS]}
    headers = {"authorization": f"Bearer {key}"}
    passed = httpx.post(f"{gateway.url}/v1/responses", headers=headers, json=body, timeout=20)
    assert passed.status_code == 200 and "x-gateway-dropped-tools" not in passed.headers
    assert responses_calls(fake)[-1]["json"]["tools"] == body["tools"]
    fake.script({"status": 503})  # the native route fails: the translated one answers
    translated = httpx.post(f"{gateway.url}/v1/responses", headers=headers, json=body, timeout=20)
    assert translated.status_code == 200 and translated.headers["x-gateway-dropped-tools"] == "web_search"
    assert [t["function"]["name"] for t in fake_b.requests[-1]["json"]["tools"]] == ["lookup"]
