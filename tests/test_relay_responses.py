"""/v1/responses (OpenAI's Responses API) for any model, driven by the official openai SDK
against OpenAI-, Anthropic- and Gemini-type fake upstreams (all translated from chat)."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from billing.models import BillingRecord, UsageLog
from conversations.models import StoredResponse
from core.money import to_nanos
from tests.conftest import wait_usage

REPLY = "This is a fake answer from the fake upstream."
MODEL = "resp-model"
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
CHAT_PATH = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "gemini": "generateContent"}


def client_for(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


def async_client_for(gateway, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


@pytest.fixture(params=["openai", "anthropic", "gemini"])
def upstream(request, world, fake):
    provider = world.provider(fake, type=request.param, api_key="sk-upstream")
    world.route(provider, MODEL)
    user = world.user("carol")
    return {"type": request.param, "key": world.key(user), "fake": fake, "user": user, "world": world}


def sent_texts(record: dict) -> str:
    """Every string of an upstream request's conversation, whatever its protocol."""
    body = record["json"]
    return json.dumps(
        [body.get("system"), body.get("systemInstruction"), body.get("messages"), body.get("contents")]
    )


def in_order(text: str, *parts: str) -> bool:
    positions = [text.find(part) for part in parts]
    return all(p >= 0 for p in positions) and positions == sorted(positions)


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


# --------------------------------------------------------------------------- create


def test_create_with_string_input(gateway, upstream):
    client = client_for(gateway, upstream["key"])
    raw = client.responses.with_raw_response.create(model=MODEL, input="hello there", instructions="be brief")
    response = raw.parse()
    assert (
        response.object == "response" and response.id.startswith("resp_") and response.status == "completed"
    )
    assert response.model == MODEL and response.output_text == REPLY and response.instructions == "be brief"
    assert (
        response.usage.output_tokens == 9 and response.usage.total_tokens == response.usage.input_tokens + 9
    )
    sent = upstream["fake"].requests[-1]
    assert CHAT_PATH[upstream["type"]] in sent["path"]
    assert in_order(sent_texts(sent), "be brief", "hello there")
    if upstream["type"] == "openai":
        assert sent["json"]["messages"] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ]
    log = wait_usage(raw.headers["x-request-id"])
    assert log.request_type == "responses" and log.completion_tokens == 9 and log.cost > 0
    assert log.endpoint == "/v1/responses" and not log.stream


def test_create_with_items_async(gateway, upstream):
    async def main():
        async with async_client_for(gateway, upstream["key"]) as client:
            return await client.responses.create(
                model=MODEL,
                input=[
                    {
                        "type": "message",
                        "role": "developer",
                        "content": [{"type": "input_text", "text": "dev rule"}],
                    },
                    {"role": "user", "content": [{"type": "input_text", "text": "first part"}]},
                    {"role": "assistant", "content": "an earlier answer"},
                    {"role": "user", "content": "the question"},
                ],
            )

    response = asyncio.run(main())
    assert response.output_text == REPLY and response.output[0].type == "message"
    assert in_order(
        sent_texts(upstream["fake"].requests[-1]),
        "dev rule",
        "first part",
        "an earlier answer",
        "the question",
    )


def test_stream_events(gateway, upstream):
    response = httpx.post(
        f"{gateway.url}/v1/responses",
        headers={"authorization": f"Bearer {upstream['key']}"},
        json={"model": MODEL, "input": "stream it", "stream": True},
        timeout=20,
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in response.text
    events = sse_events(response.text)
    types = [event["type"] for event in events]
    assert types[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    numbers = [event["sequence_number"] for event in events]
    assert numbers == list(range(len(events)))
    deltas = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    final = events[-1]["response"]
    assert deltas == REPLY == final["output"][0]["content"][0]["text"]
    assert final["usage"]["output_tokens"] == 9 and final["status"] == "completed"
    assert len({event["response"]["id"] for event in events if "response" in event}) == 1


def test_stream_helper_sync_and_async(gateway, upstream):
    client = client_for(gateway, upstream["key"])
    with client.responses.stream(model=MODEL, input="stream it") as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == REPLY == final.output_text and final.usage.output_tokens == 9

    async def main():
        aclient = async_client_for(gateway, upstream["key"])
        async with aclient, aclient.responses.stream(model=MODEL, input="stream it") as astream:
            return await astream.get_final_response()

    assert asyncio.run(main()).output_text == REPLY


@pytest.mark.parametrize("streamed", [False, True])
def test_function_tool_round_trip(gateway, upstream, streamed):
    client = client_for(gateway, upstream["key"])
    question = {"role": "user", "content": f"weather in Paris {TOOL_TURN}"}
    if streamed:
        with client.responses.stream(model=MODEL, input=[question], tools=TOOLS) as stream:
            events = list(stream)
            first = stream.get_final_response()
        deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        done = [e for e in events if e.type == "response.function_call_arguments.done"]
        assert len(done) == 1 and deltas == done[0].arguments
    else:
        first = client.responses.create(model=MODEL, input=[question], tools=TOOLS)
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "lookup" and call.status == "completed" and call.call_id
    assert json.loads(call.arguments)["query"].startswith("weather in Paris")
    if streamed:
        assert deltas == call.arguments
    second = client.responses.create(
        model=MODEL,
        tools=TOOLS,
        input=[
            question,
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.output_text == "It is sunny today"
    sent = upstream["fake"].requests[-1]
    if upstream["type"] == "openai":
        assistant, tool = sent["json"]["messages"][-2:]
        assert assistant["tool_calls"][0]["id"] == call.call_id
        assert assistant["tool_calls"][0]["function"]["name"] == "lookup"
        assert tool == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}
    assert "sunny" in sent_texts(sent)


def test_previous_response_id_sends_the_whole_history(gateway, upstream):
    client = client_for(gateway, upstream["key"])
    first = client.responses.create(model=MODEL, input="the first question", instructions="old rules")
    second = client.responses.create(
        model=MODEL, input="the second question", instructions="new rules", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id and second.output_text == REPLY
    texts = sent_texts(upstream["fake"].requests[-1])
    assert in_order(texts, "new rules", "the first question", REPLY, "the second question")
    assert "old rules" not in texts  # instructions are not carried over (as the API does)
    # and a third turn continues from the second: tool calls included
    third = client.responses.create(
        model=MODEL, input=f"look it up {TOOL_TURN}", tools=TOOLS, previous_response_id=second.id
    )
    (call,) = [item for item in third.output if item.type == "function_call"]
    fourth = client.responses.create(
        model=MODEL,
        tools=TOOLS,
        previous_response_id=third.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rainy"}],
    )
    assert fourth.output_text == "It is rainy today"
    assert in_order(
        sent_texts(upstream["fake"].requests[-1]), "the first question", "the second question", "rainy"
    )


def test_retrieve_input_items_and_delete(gateway, upstream):
    client = client_for(gateway, upstream["key"])
    created = client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "input_text", "text": "two"}]},
        ],
    )
    got = client.responses.retrieve(created.id)
    assert got.id == created.id and got.output_text == REPLY and got.usage == created.usage
    items = client.responses.input_items.list(created.id)
    assert [item.content[0].text for item in items.data] == ["two", "one"]  # newest first by default
    page = client.responses.input_items.list(created.id, order="asc", limit=1)
    assert [item.content[0].text for item in page.data] == ["one"] and page.has_more
    assert [item.content[0].text for item in page.iter_pages().__next__().data] == ["one"]
    every = [
        item.content[0].text for item in client.responses.input_items.list(created.id, order="asc", limit=1)
    ]
    assert every == ["one", "two"]
    assert all(item.id.startswith("msg_") and item.type == "message" for item in items.data)
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(created.id)


def test_store_false_stores_nothing(gateway, upstream):
    client = client_for(gateway, upstream["key"])
    response = client.responses.create(model=MODEL, input="keep nothing", store=False)
    assert response.store is False and response.output_text == REPLY
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, input="again", previous_response_id=response.id)
    assert (
        refused.value.code == "previous_response_not_found" and refused.value.param == "previous_response_id"
    )
    assert not StoredResponse.objects.exists()


def test_users_never_see_each_others_responses(gateway, upstream):
    world = upstream["world"]
    alice = client_for(gateway, upstream["key"])
    mallory = client_for(gateway, world.key(world.user("mallory")))
    created = alice.responses.create(model=MODEL, input="private")
    for attempt in (
        lambda: mallory.responses.retrieve(created.id),
        lambda: mallory.responses.input_items.list(created.id),
        lambda: mallory.responses.delete(created.id),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    with pytest.raises(openai.BadRequestError) as refused:
        mallory.responses.create(model=MODEL, input="continue", previous_response_id=created.id)
    assert refused.value.code == "previous_response_not_found"
    assert refused.value.body == {
        "message": f"Previous response with id '{created.id}' not found.",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }
    assert alice.responses.retrieve(created.id).id == created.id  # still there for its owner
    # another key of the same user sees it
    same_user = client_for(gateway, world.key(upstream["user"]))
    assert same_user.responses.retrieve(created.id).id == created.id


def test_json_schema_output(gateway, upstream):
    client = client_for(gateway, upstream["key"])
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    reply = '{"answer": "yes"}'
    response = client.responses.create(
        model=MODEL,
        input=f'answer in JSON [[fake:{{"reply": {json.dumps(reply)}}}]]',
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
    )
    assert json.loads(response.output_text) == {"answer": "yes"}
    assert response.text.format.type == "json_schema"
    sent = upstream["fake"].requests[-1]["json"]
    if upstream["type"] == "openai":
        assert sent["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": True},
        }
    elif upstream["type"] == "gemini":
        assert sent["generationConfig"]["responseMimeType"] == "application/json"
    else:
        assert "JSON" in json.dumps(sent["system"])


def test_input_tokens(gateway, upstream):
    client = client_for(gateway, upstream["key"])
    counted = client.responses.input_tokens.count(model=MODEL, input="hello world", instructions="be brief")
    assert counted.object == "response.input_tokens" and counted.input_tokens > 4
    assert not upstream["fake"].requests  # counted here


# --------------------------------------------------------------------------- errors


def test_errors_are_openai_errors(gateway, upstream):
    with pytest.raises(openai.AuthenticationError):
        client_for(gateway, "sk-gw-nope").responses.create(model=MODEL, input="x")
    client = client_for(gateway, upstream["key"])
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="no-such-model", input="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as no_input:
        client.responses.create(model=MODEL)
    assert no_input.value.param == "input" and no_input.value.code == "missing_required_parameter"
    with pytest.raises(openai.BadRequestError) as background:
        client.responses.create(model=MODEL, input="x", background=True)
    assert background.value.param == "background" and "not supported" in background.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_unknown")
    upstream["fake"].script({"status": 500})
    with pytest.raises(openai.APIStatusError) as failed:
        client.responses.create(model=MODEL, input="x")
    assert failed.value.status_code == 502 and "error" in failed.value.response.json()


def test_cut_stream_ends_with_response_failed(gateway, upstream):
    upstream["fake"].script({"cut_after": 3})
    response = httpx.post(
        f"{gateway.url}/v1/responses",
        headers={"authorization": f"Bearer {upstream['key']}"},
        json={"model": MODEL, "input": "x", "stream": True},
        timeout=20,
    )
    events = sse_events(response.text)
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.failed"
    assert not any(event["type"] == "response.completed" for event in events)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["response"]["id"] == events[0]["response"]["id"]
    log = wait_usage(response.headers["x-request-id"])
    assert log.status_code == 502 and log.usage_estimated
    assert not StoredResponse.objects.exists()


# --------------------------------------------------------------------------- Codex


CODEX_REQUEST = {
    "model": MODEL,
    "instructions": "You are Codex, a coding agent.",
    "input": [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "sandbox rules"}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "<environment_context/>"}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list the files"}]},
    ],
    "tools": [
        {
            "type": "function",
            "name": "exec_command",
            "description": "Runs a command in a PTY.",
            "strict": False,
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
        },
        {
            "type": "namespace",
            "name": "collaboration",
            "description": "Work with other agents.",
            "tools": [
                {
                    "type": "function",
                    "name": "spawn_agent",
                    "description": "Spawns an agent.",
                    "parameters": {"type": "object", "properties": {"message": {"type": "string"}}},
                }
            ],
        },
        {"type": "web_search", "external_web_access": False},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "0199a213-81c0-7800-8aa1-bbab2a035a53",
    "client_metadata": {"originator": "codex_exec"},
    "text": {"verbosity": "medium"},
}


def test_codex_shaped_request_completes_on_a_chat_upstream(gateway, upstream):
    from providers.models import Model

    Model.objects.filter(slug=MODEL).update(supports_reasoning=True)
    response = httpx.post(
        f"{gateway.url}/v1/responses",
        headers={"authorization": f"Bearer {upstream['key']}", "originator": "codex_exec"},
        json=CODEX_REQUEST,
        timeout=20,
    )
    assert response.status_code == 200
    assert response.headers["x-gateway-dropped-tools"] == "web_search"
    events = sse_events(response.text)
    assert events[-1]["type"] == "response.completed"
    final = events[-1]["response"]
    assert final["store"] is False and final["output"][-1]["content"][0]["text"] == REPLY
    sent = upstream["fake"].requests[-1]["json"]
    assert in_order(
        sent_texts(upstream["fake"].requests[-1]), "You are Codex", "sandbox rules", "list the files"
    )
    if upstream["type"] == "openai":
        assert [tool["function"]["name"] for tool in sent["tools"]] == [
            "exec_command",
            "collaboration__spawn_agent",
        ]
        assert sent["reasoning_effort"] == "medium" and sent["parallel_tool_calls"] is True
        for field in ("include", "prompt_cache_key", "client_metadata", "store", "text", "input"):
            assert field not in sent
    assert not StoredResponse.objects.exists()


def test_codex_namespace_tool_call_maps_back(gateway, fake, world):
    provider = world.provider(fake, type="openai")
    world.route(provider, MODEL)
    key = world.key(world.user("dave"))
    fake.script({"tool_call": {"name": "collaboration__spawn_agent", "arguments": {"message": "hi"}}})
    response = httpx.post(
        f"{gateway.url}/v1/responses",
        headers={"authorization": f"Bearer {key}"},
        json={**CODEX_REQUEST, "stream": False},
        timeout=20,
    )
    (call,) = [item for item in response.json()["output"] if item["type"] == "function_call"]
    assert (call["name"], call["namespace"], json.loads(call["arguments"])) == (
        "spawn_agent",
        "collaboration",
        {"message": "hi"},
    )


# --------------------------------------------------------------------------- billing


@pytest.mark.parametrize("streamed", [False, True])
def test_billed_exactly_once(gateway, world, fake, streamed):
    world.route(world.provider(fake, type="openai"), MODEL)
    user = world.user("erin")
    key = world.key(user)
    start = user.balance
    response = httpx.post(
        f"{gateway.url}/v1/responses",
        headers={"authorization": f"Bearer {key}"},
        json={"model": MODEL, "input": "bill me please [[cached:2]]", "stream": streamed},
        timeout=20,
    )
    assert response.status_code == 200
    rid = response.headers["x-request-id"]
    log = wait_usage(rid)
    usage = sse_events(response.text)[-1]["response"]["usage"] if streamed else response.json()["usage"]
    assert (
        (log.prompt_tokens, log.completion_tokens, log.cached_tokens)
        == (
            usage["input_tokens"],
            usage["output_tokens"],
            usage["input_tokens_details"]["cached_tokens"],
        )
        == (log.prompt_tokens, 9, 2)
    )
    assert (log.request_type, log.stream, log.usage_estimated) == ("responses", streamed, False)
    # the route's prices (tests.conftest.World.route): $1 per 1M in, $0.5 per 1M cached in, $2 per 1M out
    uncached = log.prompt_tokens - log.cached_tokens
    expected = uncached * to_nanos("0.000001") + 2 * to_nanos("0.0000005") + 9 * to_nanos("0.000002")
    assert log.cost == expected > 0
    assert UsageLog.objects.filter(request_id=rid).count() == 1
    (charge,) = BillingRecord.objects.filter(request_id=rid)
    user.refresh_from_db()
    assert charge.amount == -log.cost and charge.balance_after == user.balance == start - log.cost


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_items_from_an_upstream_that_streams_reasoning(gateway, fake, world, stream):
    """An OpenAI-type upstream that reasons (reasoning_content deltas): the client that asked
    for a reasoning summary gets a reasoning item with it, before the message."""
    from providers.models import Model

    provider = world.provider(fake, type="openai", api_key="sk-upstream")
    world.route(provider, MODEL)
    Model.objects.filter(slug=MODEL).update(supports_reasoning=True)
    client = client_for(gateway, world.key(world.user("dora")))
    thought = "Two and two make four, so the answer is four."
    fake.script({"reasoning": thought, "reply": "Four."})
    request = {
        "model": MODEL,
        "input": "What is two plus two?",
        "reasoning": {"effort": "low", "summary": "auto"},
        "store": False,
    }
    if stream:
        with client.responses.stream(**request) as events:
            kinds = [event.type for event in events]
            final = events.get_final_response()
        assert "response.reasoning_summary_text.delta" in kinds
        assert kinds.index("response.reasoning_summary_text.delta") < kinds.index(
            "response.output_text.delta"
        )
    else:
        final = client.responses.create(**request)
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert "".join(part.text for part in final.output[0].summary) == thought
    assert final.output_text == "Four."
    assert fake.requests[-1]["json"]["reasoning_effort"] == "low"
    assert final.usage.output_tokens_details.reasoning_tokens > 0
