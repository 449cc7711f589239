"""End to end: the real ASGI server driven by the official openai SDK (sync and async)."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import openai
import pytest

from billing.models import BillingRecord, UsageLog
from core.money import to_nanos
from tests.conftest import wait_usage


def client_for(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


@pytest.fixture
def setup(world, fake):
    provider = world.provider(fake)
    for model in ("gpt-4o-mini", "text-embedding-3-small", "gpt-3.5-turbo-instruct"):
        world.route(provider, model)
    user = world.user("alice")
    key = world.key(user)
    return {"provider": provider, "user": user, "key": key}


def test_models_list_and_retrieve(gateway, setup, world):
    client = client_for(gateway, setup["key"])
    ids = sorted(m.id for m in client.models.list())
    assert ids == ["gpt-3.5-turbo-instruct", "gpt-4o-mini", "text-embedding-3-small"]
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    limited = world.key(setup["user"], allowed_models=["gpt-4o-mini"])
    assert [m.id for m in client_for(gateway, limited).models.list()] == ["gpt-4o-mini"]


def test_chat_json_is_billed_exactly(gateway, setup, fake):
    client = client_for(gateway, setup["key"])
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "say hello please"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "This is a fake answer from the fake upstream."
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 9)
    # the upstream got the gateway's credentials, not the client's key
    assert setup["key"] not in json.dumps(fake.requests[-1]["headers"])
    log = wait_usage(raw.headers["x-request-id"])
    assert (log.prompt_tokens, log.completion_tokens, log.status_code, log.stream) == (3, 9, 200, False)
    # $1 per 1M in, $2 per 1M out: 3 + 18 millionths of a dollar
    assert log.cost == to_nanos("0.000021")
    assert log.provider_id == setup["provider"].pk and log.model_billed == "gpt-4o-mini"
    charge = BillingRecord.objects.get(request_id=log.request_id)
    setup["user"].refresh_from_db()
    assert (
        charge.amount == -log.cost
        and charge.balance_after == setup["user"].balance == to_nanos("10") - log.cost
    )


def test_chat_stream_with_include_usage(gateway, setup):
    client = client_for(gateway, setup["key"])
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "This is a fake answer from the fake upstream."
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 9
    assert chunks[-1].usage.prompt_tokens == 2


def test_chat_stream_without_include_usage_strips_it_but_bills_it(gateway, setup, fake):
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {setup['key']}"},
        json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "one two"}]},
        timeout=20,
    )
    body = response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert body.rstrip().endswith("data: [DONE]")
    assert '"usage"' not in body  # the client did not ask for it
    # but the gateway asked the upstream for it, and bills exactly that
    assert fake.requests[-1]["json"]["stream_options"] == {"include_usage": True}
    log = wait_usage(response.headers["x-request-id"])
    assert (log.prompt_tokens, log.completion_tokens, log.usage_estimated) == (2, 9, False)


def test_tool_call_round_trip(gateway, setup, fake):
    client = client_for(gateway, setup["key"])
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look something up",
                "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
            },
        }
    ]
    fake.script({"tool_call": True})
    first = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "weather"}],
        tools=tools,
        tool_choice="auto",
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"query": "weather"}
    second = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "user", "content": "weather"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
        tools=tools,
    )
    assert second.choices[0].message.content
    sent = fake.requests[-1]["json"]
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}
    assert sent["tools"] == tools


def test_streamed_tool_call(gateway, setup, fake):
    client = client_for(gateway, setup["key"])
    fake.script({"tool_call": True})
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "find it"}],
        tools=[{"type": "function", "function": {"name": "find", "parameters": {"type": "object"}}}],
        stream=True,
    )
    arguments = ""
    name = None
    for chunk in stream:
        for delta_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name = delta_call.function.name or name
            arguments += delta_call.function.arguments or ""
    assert name == "find" and json.loads(arguments) == {"query": "find it"}


def test_embeddings_and_completions(gateway, setup):
    client = client_for(gateway, setup["key"])
    embedding = client.embeddings.create(model="text-embedding-3-small", input=["one two", "three"])
    assert len(embedding.data) == 2 and len(embedding.data[0].embedding) == 8
    assert embedding.usage.prompt_tokens == 3
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="once upon a time")
    assert completion.choices[0].text == "This is a fake answer from the fake upstream."


def test_async_client(gateway, setup):
    async def run():
        client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=setup["key"], max_retries=0)
        result = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return result.choices[0].message.content, text

    answer, streamed = asyncio.run(run())
    assert answer == streamed == "This is a fake answer from the fake upstream."


# --- errors ------------------------------------------------------------------------------


def test_error_classes(gateway, setup, world, fake):
    with pytest.raises(openai.AuthenticationError) as bad_key:
        client_for(gateway, "sk-gw-wrong").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert bad_key.value.code == "invalid_api_key"

    limited = client_for(gateway, world.key(setup["user"], allowed_models=["text-embedding-3-small"]))
    with pytest.raises(openai.PermissionDeniedError) as denied:
        limited.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert denied.value.code == "model_not_allowed"

    client = client_for(gateway, setup["key"])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])

    fake.script({"status": 500})
    with pytest.raises(openai.InternalServerError) as upstream:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert upstream.value.status_code == 502 and upstream.value.code == "upstream_failed"

    fake.script({"status": 400})  # a client error upstream passes through as it is
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model"),
        (b'{"model": "gpt-4o-mini"}', 400, "messages"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "n": 0}', 400, "n"),
    ],
)
def test_bad_requests_get_openai_errors(gateway, setup, body, status, param):
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {setup['key']}"},
        content=body,
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_oversized_body_gets_413(gateway, setup, settings):
    settings.RELAY_MAX_BODY_BYTES = 2048
    big = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 5000}]})
    for headers in ({}, {"transfer-encoding": "chunked"}):
        content = big.encode() if not headers else iter([big.encode()])
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {setup['key']}", **headers},
            content=content,
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"


def test_unknown_endpoint_and_method(gateway, setup):
    headers = {"Authorization": f"Bearer {setup['key']}"}
    assert httpx.post(f"{gateway.url}/v1/nothing", headers=headers).status_code == 404
    assert httpx.get(f"{gateway.url}/v1/chat/completions", headers=headers).status_code == 405


def test_embeddings_base64_passthrough(gateway, setup):
    response = httpx.post(
        f"{gateway.url}/v1/embeddings",
        headers={"Authorization": f"Bearer {setup['key']}"},
        json={"model": "text-embedding-3-small", "input": "hello", "encoding_format": "base64"},
    )
    assert len(base64.b64decode(response.json()["data"][0]["embedding"])) == 8 * 4


def test_failed_call_costs_nothing(gateway, setup, fake):
    fake.script({"status": 503})
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {setup['key']}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 502
    log = wait_usage(response.headers["x-request-id"])
    assert log.cost == 0 and log.status_code == 502 and log.providers_tried[0]["status"] == 503
    assert not BillingRecord.objects.filter(request_id=log.request_id).exists()
    assert UsageLog.objects.count() == 1
