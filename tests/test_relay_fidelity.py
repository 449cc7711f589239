"""Protocol fidelity end to end: what the official SDKs get back, and what reaches the
upstream, for every provider type a request can be translated to (openai, anthropic,
gemini; azure where the chat protocol is concerned).

/v1/messages is driven by the ``anthropic`` SDK, /v1/chat/completions by the ``openai``
SDK, both against the real gateway and the loopback fake upstream."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import wait_usage

REPLY = "This is a fake answer from the fake upstream."
MODEL = "claude-like"
PROVIDER_TYPES = ["openai", "anthropic", "gemini"]
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


def messages_client(gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=20)


def chat_client(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


def directive(**behaviour: Any) -> str:
    """An inline fake-upstream behaviour for the last user message."""
    return f"[[fake:{json.dumps(behaviour)}]]"


def ask(client: anthropic.Anthropic, stream: bool, **params: Any) -> tuple[Any, list[Any]]:
    """The final message (and, streaming, every event) of one /v1/messages call."""
    if not stream:
        return client.messages.create(**params), []
    with client.messages.stream(**params) as events:
        seen = list(events)
        return events.get_final_message(), seen


def text_of(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            events.append((fields.get("event", ""), json.loads(fields["data"])))
    return events


def sent(fake) -> dict[str, Any]:
    """The JSON body of the last request the fake upstream received."""
    return fake.requests[-1]["json"]


@pytest.fixture(params=PROVIDER_TYPES)
def upstream(request, world, fake):
    """A model routed to the fake upstream through a provider of each type."""
    provider = world.provider(fake, type=request.param, api_key="sk-upstream")
    route = world.route(provider, MODEL)
    return SimpleNamespace(type=request.param, fake=fake, route=route, key=world.key(world.user("carol")))


def reasoning_route(world, fake, *, reasoning: bool):
    provider = world.provider(fake, type="openai", api_key="sk-upstream")
    route = world.route(provider, MODEL)
    route.model.supports_reasoning = reasoning
    route.model.save()
    return route


# --- a. role "system" inside the conversation -------------------------------------------


@STREAM
def test_mid_conversation_system_message(gateway, upstream, stream):
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "second question"},
    ]
    client = messages_client(gateway, upstream.key)
    message, _ = ask(client, stream, model=MODEL, max_tokens=100, system="be brief", messages=messages)
    assert text_of(message) == REPLY
    body = sent(upstream.fake)
    if upstream.type == "anthropic":
        assert body["messages"] == messages and body["system"] == "be brief"
    elif upstream.type == "openai":
        assert body["messages"] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "second question"},
        ]
    else:
        system = " ".join(part["text"] for part in body["systemInstruction"]["parts"])
        assert "be brief" in system and "Answer in French." in system
        assert [content["role"] for content in body["contents"]] == ["user", "model", "user"]
        assert "French" not in json.dumps(body["contents"])


# --- b. thinking ------------------------------------------------------------------------

THOUGHT = "Let me think about it."
THINKING = [
    pytest.param({"type": "enabled", "budget_tokens": 2048}, "low", id="enabled-2048"),
    pytest.param({"type": "adaptive"}, "medium", id="adaptive"),
]


@STREAM
@pytest.mark.parametrize(("thinking", "effort"), THINKING)
def test_thinking_over_an_openai_reasoning_model(gateway, world, fake, thinking, effort, stream):
    reasoning_route(world, fake, reasoning=True)
    client = messages_client(gateway, world.key())
    content = "think hard " + directive(reasoning=THOUGHT, reply="Done thinking.")
    message, events = ask(
        client,
        stream,
        model=MODEL,
        max_tokens=4096,
        thinking=thinking,
        messages=[{"role": "user", "content": content}],
    )
    assert sent(fake)["reasoning_effort"] == effort
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == THOUGHT and message.content[1].text == "Done thinking."
    assert message.usage.output_tokens == 5 + 2  # reasoning words count as output
    if stream:
        deltas = [event for event in events if event.type == "content_block_delta"]
        kinds = [event.delta.type for event in deltas]
        assert kinds == ["thinking_delta"] * 5 + ["text_delta"] * 2  # thinking first
        assert "".join(event.delta.thinking for event in deltas[:5]) == THOUGHT
        starts = [event.content_block.type for event in events if event.type == "content_block_start"]
        assert starts == ["thinking", "text"]


@STREAM
@pytest.mark.parametrize(("thinking", "effort"), THINKING)
def test_thinking_on_a_model_without_reasoning_sends_no_effort(
    gateway, world, fake, thinking, effort, stream
):
    reasoning_route(world, fake, reasoning=False)
    client = messages_client(gateway, world.key())
    message, _ = ask(
        client,
        stream,
        model=MODEL,
        max_tokens=4096,
        thinking=thinking,
        messages=[{"role": "user", "content": "think"}],
    )
    assert text_of(message) == REPLY
    assert "reasoning_effort" not in sent(fake)


@STREAM
def test_thinking_blocks_sent_back(gateway, upstream, stream):
    thinking_block = {"type": "thinking", "thinking": "I pondered deeply.", "signature": "sig-abc123=="}
    assistant = [thinking_block, {"type": "text", "text": "first answer"}]
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": assistant},
        {"role": "user", "content": "second question"},
    ]
    client = messages_client(gateway, upstream.key)
    message, _ = ask(
        client,
        stream,
        model=MODEL,
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=messages,
    )
    assert text_of(message) == REPLY
    body = sent(upstream.fake)
    if upstream.type == "anthropic":
        assert body["messages"] == messages  # signature and all
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    else:
        dumped = json.dumps(body)
        assert "sig-abc123" not in dumped and "I pondered" not in dumped
        assert "first answer" in dumped
    if upstream.type == "openai":
        assert body["messages"][1] == {"role": "assistant", "content": "first answer"}


# --- c. several tool calls in one turn ----------------------------------------------------

CALLS = [
    {"name": "read", "arguments": {"path": "/tmp/a b.txt", "limit": 20}},
    {"name": "grep", "arguments": {"pattern": "x y z", "path": ".", "flags": ["-i", "-n"]}},
    {"name": "ls", "arguments": {"dir": "src"}},
]
TOOLS = [
    {"name": call["name"], "description": f"the {call['name']} tool", "input_schema": {"type": "object"}}
    for call in CALLS
]


def check_tool_uses(message) -> None:
    tool_uses = [block for block in message.content if block.type == "tool_use"]
    assert [(block.name, block.input) for block in tool_uses] == [
        (call["name"], call["arguments"]) for call in CALLS
    ]
    assert len({block.id for block in tool_uses}) == len(CALLS)
    assert message.stop_reason == "tool_use"


@STREAM
def test_parallel_tool_calls(gateway, upstream, stream):
    client = messages_client(gateway, upstream.key)
    content = "look around " + directive(tool_calls=CALLS)
    message, _ = ask(
        client,
        stream,
        model=MODEL,
        max_tokens=500,
        tools=TOOLS,
        messages=[{"role": "user", "content": content}],
    )
    check_tool_uses(message)


@pytest.mark.parametrize("interleave", [False, True], ids=["sequential", "interleaved"])
def test_tool_call_fragments_over_an_openai_stream(gateway, world, fake, interleave):
    provider = world.provider(fake, type="openai", api_key="sk-upstream")
    world.route(provider, MODEL)
    client = messages_client(gateway, world.key())
    content = "look around " + directive(tool_calls=CALLS, interleave=interleave)
    message, events = ask(
        client,
        True,
        model=MODEL,
        max_tokens=500,
        tools=TOOLS,
        messages=[{"role": "user", "content": content}],
    )
    check_tool_uses(message)
    assert fake.requests[-1]["behaviour"]["interleave"] is interleave
    # every block is started, filled and stopped before the next one starts
    order = [(event.type, event.index) for event in events if event.type.startswith("content_block")]
    assert [index for _, index in order] == sorted(index for _, index in order)
    assert [index for kind, index in order if kind == "content_block_start"] == [0, 1, 2]


@STREAM
def test_thinking_then_parallel_tool_calls(gateway, world, fake, stream):
    reasoning_route(world, fake, reasoning=True)
    client = messages_client(gateway, world.key())
    content = "look around " + directive(reasoning=THOUGHT, tool_calls=CALLS, interleave=True)
    message, _ = ask(
        client,
        stream,
        model=MODEL,
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        tools=TOOLS,
        messages=[{"role": "user", "content": content}],
    )
    assert [block.type for block in message.content] == ["thinking", "tool_use", "tool_use", "tool_use"]
    assert message.content[0].thinking == THOUGHT
    check_tool_uses(message)


# --- d. stop sequences --------------------------------------------------------------------


STOP_CASES = [
    pytest.param(["NEVER", "END"], "END", "Alpha beta ", id="in-one-chunk"),
    pytest.param(["beta END"], "beta END", "Alpha ", id="across-chunks"),
    pytest.param(["ga", "END"], "END", "Alpha beta ", id="earliest-wins"),
]


def streamed_text(events: list[Any]) -> str:
    return "".join(
        event.delta.text
        for event in events
        if event.type == "content_block_delta" and event.delta.type == "text_delta"
    )


def check_stops_not_sent(upstream) -> None:
    record = upstream.fake.requests[-1]
    if upstream.type == "anthropic":
        return
    # the gateway matches the sequences itself: the upstream never sees them
    assert record["stop_sequences"] == [] and record["stop_hit"] is None
    assert "stop" not in record["json"]
    assert "stopSequences" not in (record["json"].get("generationConfig") or {})


@STREAM
@pytest.mark.parametrize(("sequences", "hit", "text"), STOP_CASES)
def test_stop_sequences(gateway, upstream, stream, sequences, hit, text):
    client = messages_client(gateway, upstream.key)
    content = "count " + directive(reply="Alpha beta END gamma delta")
    message, events = ask(
        client,
        stream,
        model=MODEL,
        max_tokens=100,
        stop_sequences=sequences,
        messages=[{"role": "user", "content": content}],
    )
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", hit)
    assert text_of(message) == text
    assert message.usage.output_tokens > 0  # text was generated (Anthropic counts it)
    if stream:
        assert streamed_text(events) == text
    if upstream.type == "anthropic":
        record = upstream.fake.requests[-1]
        assert record["stop_sequences"] == sequences and record["stop_hit"] == hit
    check_stops_not_sent(upstream)


@STREAM
def test_stop_sequence_not_hit(gateway, upstream, stream):
    """A possible beginning of a sequence at the very end is held back while streaming,
    and must still be sent when the answer ends without the sequence."""
    client = messages_client(gateway, upstream.key)
    content = "count " + directive(reply="Alpha beta EN")
    message, events = ask(
        client,
        stream,
        model=MODEL,
        max_tokens=100,
        stop_sequences=["END"],
        messages=[{"role": "user", "content": content}],
    )
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert text_of(message) == "Alpha beta EN"
    if stream:
        assert streamed_text(events) == "Alpha beta EN"
    check_stops_not_sent(upstream)


@pytest.mark.parametrize("provider_type", ["openai", "gemini"])
def test_stop_sequence_stops_the_upstream_stream(gateway, world, fake, provider_type):
    """Once the gateway matched a sequence in a translated stream, it stops the upstream
    rather than read (and bill) the rest of the answer."""
    world.route(world.provider(fake, type=provider_type, api_key="sk-upstream"), MODEL)
    client = messages_client(gateway, world.key())
    reply = "Alpha END " + " ".join(f"word{i}" for i in range(40))
    content = "count " + directive(reply=reply, chunk_delay=0.05)
    message, _ = ask(
        client,
        True,
        model=MODEL,
        max_tokens=100,
        stop_sequences=["END"],
        messages=[{"role": "user", "content": content}],
    )
    assert (message.stop_reason, text_of(message)) == ("stop_sequence", "Alpha ")
    record = fake.wait_until_ended(timeout=5)
    assert record["client_disconnected"] and record["chunks_sent"] < 20


@STREAM
def test_stop_sequences_apply_to_text_not_thinking(gateway, world, fake, stream):
    reasoning_route(world, fake, reasoning=True)
    client = messages_client(gateway, world.key())
    thought = "I will say END at some point."
    content = "go " + directive(reasoning=thought, reply="Alpha END beta")
    message, _ = ask(
        client,
        stream,
        model=MODEL,
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        stop_sequences=["END"],
        messages=[{"role": "user", "content": content}],
    )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == thought and message.content[1].text == "Alpha "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")


# --- e. usage in message_start and at the end ---------------------------------------------


def expected_usage(upstream) -> dict[str, int]:
    """The fake's reported usage in Anthropic's terms (input excludes cache reads)."""
    reported = upstream.fake.requests[-1]["usage"]
    if upstream.type == "openai":
        cached = reported["prompt_tokens_details"]["cached_tokens"]
        return {
            "input_tokens": reported["prompt_tokens"] - cached,
            "output_tokens": reported["completion_tokens"],
            "cache_read_input_tokens": cached,
        }
    if upstream.type == "gemini":
        cached = reported.get("cachedContentTokenCount", 0)
        return {
            "input_tokens": reported["promptTokenCount"] - cached,
            "output_tokens": reported["candidatesTokenCount"],
            "cache_read_input_tokens": cached,
        }
    return {key: reported[key] for key in ("input_tokens", "output_tokens", "cache_read_input_tokens")}


def test_stream_usage_in_message_start_and_at_the_end(gateway, upstream):
    response = httpx.post(
        f"{gateway.url}/v1/messages",
        headers={"x-api-key": upstream.key, "anthropic-version": "2023-06-01"},
        json={
            "model": MODEL,
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "count these words please [[cached:5]]"}],
        },
        timeout=20,
    )
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    usage = dict(events[0][1]["message"]["usage"])
    assert usage["input_tokens"] > 0
    for name, data in events:
        if name == "message_delta":
            usage.update({key: value for key, value in data["usage"].items() if value is not None})
    expected = expected_usage(upstream)
    assert expected["output_tokens"] == 9 and expected["cache_read_input_tokens"] == 5
    assert {key: usage.get(key, 0) for key in expected} == expected
    log = wait_usage(response.headers["x-request-id"])
    assert not log.usage_estimated
    assert (log.prompt_tokens, log.completion_tokens, log.cached_tokens) == (
        expected["input_tokens"] + 5,
        9,
        5,
    )


@STREAM
def test_final_usage_equals_the_upstream_report(gateway, upstream, stream):
    client = messages_client(gateway, upstream.key)
    message, _ = ask(
        client,
        stream,
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "count these words please [[cached:5]]"}],
    )
    expected = expected_usage(upstream)
    got = message.usage
    assert (got.input_tokens, got.output_tokens, got.cache_read_input_tokens) == (
        expected["input_tokens"],
        expected["output_tokens"],
        expected["cache_read_input_tokens"],
    )


# --- f. count_tokens ----------------------------------------------------------------------


def test_count_tokens(gateway, upstream):
    client = messages_client(gateway, upstream.key)
    counted = client.messages.count_tokens(
        model=MODEL, system="be brief", messages=[{"role": "user", "content": "hello big world"}]
    )
    if upstream.type == "anthropic":
        record = upstream.fake.requests[-1]
        assert record["path"] == "/v1/messages/count_tokens"
        assert record["json"]["system"] == "be brief"
        assert counted.input_tokens == 5  # the fake's count: 2 + 3 words
    else:
        assert upstream.fake.requests == []  # counted by the gateway
        assert counted.input_tokens > 3


# --- g. Claude Code's system blocks and cache markers -------------------------------------

BILLING = "x-anthropic-billing-header: cc_version=2.1.0.abc; cc_entrypoint=cli;"
CC_SYSTEM = [
    {"type": "text", "text": BILLING},
    {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
]
CC_MESSAGES = [
    {"role": "user", "content": [{"type": "text", "text": "list the files"}]},
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}}],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01",
                "content": [{"type": "text", "text": "a.txt b.txt"}],
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "text", "text": "summarise", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
    },
]
CC_TOOLS = [
    {"name": "Bash", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
]


@STREAM
def test_claude_code_billing_header_and_cache_control(gateway, upstream, stream):
    client = messages_client(gateway, upstream.key)
    message, _ = ask(
        client, stream, model=MODEL, max_tokens=100, system=CC_SYSTEM, messages=CC_MESSAGES, tools=CC_TOOLS
    )
    assert text_of(message) == REPLY
    body = sent(upstream.fake)
    if upstream.type == "anthropic":
        assert body["system"] == CC_SYSTEM
        assert body["messages"] == CC_MESSAGES and body["tools"] == CC_TOOLS
    else:
        dumped = json.dumps(body)
        for leaked in (
            "x-anthropic-billing-header",
            "cc_version",
            "cc_entrypoint",
            "cache_control",
            "ephemeral",
        ):
            assert leaked not in dumped
        for kept in ("You are Claude Code.", "list the files", "a.txt b.txt", "summarise"):
            assert kept in dumped


# --- h. the root ------------------------------------------------------------------------


def test_root_answers_without_a_key(gateway):
    for method in ("GET", "HEAD"):
        response = httpx.request(method, f"{gateway.url}/")
        assert response.status_code == 200, method
    assert httpx.get(f"{gateway.url}/").json()["status"] == "ok"


# --- i. chat parameters a provider type cannot honour ---------------------------------------

CHAT_MODEL = "chat-model"
HELLO = [{"role": "user", "content": "hello"}]
REFUSED_BY_ANTHROPIC = [
    pytest.param("n", {"n": 2}, id="n"),
    pytest.param("logprobs", {"logprobs": True}, id="logprobs"),
    pytest.param("top_logprobs", {"top_logprobs": 2}, id="top_logprobs"),
    pytest.param("seed", {"seed": 1}, id="seed"),
]


def check_refusal(error: openai.BadRequestError, param: str, provider_type: str) -> None:
    assert error.status_code == 400 and error.param == param
    message = error.body["message"]
    assert f"'{param}'" in message and provider_type in message


@pytest.mark.parametrize(("param", "extra"), REFUSED_BY_ANTHROPIC)
def test_anthropic_refuses_what_it_cannot_honour(gateway, world, fake, fake_b, param, extra):
    world.route(world.provider(fake, type="anthropic", api_key="sk-upstream"), CHAT_MODEL)
    client = chat_client(gateway, world.key())
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, **extra)
    check_refusal(refused.value, param, "anthropic")
    assert fake.requests == []

    # another route of the same model that can honour it serves the request
    world.route(world.provider(fake_b, type="openai", api_key="sk-upstream"), CHAT_MODEL)
    completion = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, **extra)
    assert completion.choices[0].message.content == REPLY
    assert fake.requests == [] and sent(fake_b)[param] == extra[param]
    if param == "n":
        assert [choice.index for choice in completion.choices] == [0, 1]


@pytest.mark.parametrize(
    ("param", "extra"), [("logprobs", {"logprobs": True}), ("top_logprobs", {"top_logprobs": 2})]
)
def test_gemini_refuses_logprobs(gateway, world, fake, param, extra):
    world.route(world.provider(fake, type="gemini", api_key="sk-upstream"), CHAT_MODEL)
    client = chat_client(gateway, world.key())
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, **extra)
    check_refusal(refused.value, param, "gemini")
    assert fake.requests == []


@STREAM
def test_gemini_serves_n(gateway, world, fake, stream):
    world.route(world.provider(fake, type="gemini", api_key="sk-upstream"), CHAT_MODEL)
    client = chat_client(gateway, world.key())
    if stream:
        chunks = list(client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, n=2, stream=True))
        texts = {0: "", 1: ""}
        for chunk in chunks:
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
        assert texts == {0: REPLY, 1: REPLY}
    else:
        completion = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, n=2)
        assert [(c.index, c.message.content) for c in completion.choices] == [(0, REPLY), (1, REPLY)]
        assert completion.usage.completion_tokens == 18
    assert sent(fake)["generationConfig"]["candidateCount"] == 2


# --- j. the model name the client asked for -------------------------------------------------

PUBLIC = "public-name"
UPSTREAM = "upstream-name"


def echo_route(world, fake, provider_type: str):
    provider = world.provider(fake, type=provider_type, api_key="sk-upstream")
    return world.route(provider, PUBLIC, upstream_model=UPSTREAM)


def check_upstream_named(fake, provider_type: str) -> None:
    record = fake.requests[-1]
    if provider_type == "azure":
        assert record["path"].startswith(f"/openai/deployments/{UPSTREAM}/")
    elif provider_type == "gemini":
        assert record["path"].startswith(f"/v1beta/models/{UPSTREAM}:")
    else:
        assert record["json"]["model"] == UPSTREAM


@STREAM
@pytest.mark.parametrize("provider_type", ["openai", "azure", "anthropic", "gemini"])
def test_chat_names_the_requested_model(gateway, world, fake, provider_type, stream):
    echo_route(world, fake, provider_type)
    client = chat_client(gateway, world.key())
    extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    raw = client.chat.completions.with_raw_response.create(model=PUBLIC, messages=HELLO, **extra)
    if stream:
        chunks = list(raw.parse())
        assert chunks and [chunk.model for chunk in chunks] == [PUBLIC] * len(chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    else:
        completion = raw.parse()
        assert completion.model == PUBLIC and completion.choices[0].message.content == REPLY
    check_upstream_named(fake, provider_type)
    log = wait_usage(raw.headers["x-request-id"])
    assert (log.model_requested, log.model_upstream) == (PUBLIC, UPSTREAM)


@STREAM
@pytest.mark.parametrize("provider_type", ["openai", "azure", "anthropic", "gemini"])
def test_messages_names_the_requested_model(gateway, world, fake, provider_type, stream):
    echo_route(world, fake, provider_type)
    key = world.key()
    body = {"model": PUBLIC, "max_tokens": 100, "messages": HELLO}
    response = httpx.post(
        f"{gateway.url}/v1/messages",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        json={**body, "stream": stream},
        timeout=20,
    )
    assert response.status_code == 200
    assert UPSTREAM not in response.text
    if stream:
        events = sse_events(response.text)
        assert events[0][0] == "message_start" and events[0][1]["message"]["model"] == PUBLIC
    else:
        assert response.json()["model"] == PUBLIC
    check_upstream_named(fake, provider_type)
    log = wait_usage(response.headers["x-request-id"])
    assert (log.model_requested, log.model_upstream) == (PUBLIC, UPSTREAM)
    # the SDK sees the same
    message, _ = ask(messages_client(gateway, key), stream, **body)
    assert message.model == PUBLIC


# --- chat completions: stop over every provider type ----------------------------------------


@STREAM
@pytest.mark.parametrize("provider_type", ["openai", "azure", "anthropic", "gemini"])
def test_chat_stop_over_every_provider_type(gateway, world, fake, provider_type, stream):
    """``stop`` is the provider's job on the chat protocol: translated to each upstream's
    own field, and the answer ends before the sequence with finish_reason "stop"."""
    world.route(world.provider(fake, type=provider_type, api_key="sk-upstream"), CHAT_MODEL)
    client = chat_client(gateway, world.key())
    messages = [{"role": "user", "content": "count " + directive(reply="Alpha beta END gamma")}]
    if stream:
        chunks = list(
            client.chat.completions.create(model=CHAT_MODEL, messages=messages, stop=["END"], stream=True)
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert (text, finish) == ("Alpha beta ", ["stop"])
    else:
        completion = client.chat.completions.create(model=CHAT_MODEL, messages=messages, stop=["END"])
        choice = completion.choices[0]
        assert (choice.message.content, choice.finish_reason) == ("Alpha beta ", "stop")
    record = fake.requests[-1]
    assert record["stop_sequences"] == ["END"] and record["stop_hit"] == "END"
