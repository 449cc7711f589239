"""Tests of the fake AI provider upstream (tests/fakes/upstream.py)."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.upstream import DEFAULT_REPLY, FakeUpstream, embedding_vector

KEY = "sk-fake-test"
OPENAI = {"Authorization": f"Bearer {KEY}"}
ANTHROPIC = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
GEMINI = {"x-goog-api-key": KEY}
TOOLS_OPENAI = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
TOOLS_ANTHROPIC = [{"name": "search", "input_schema": {"type": "object"}}]
TOOLS_GEMINI = [{"functionDeclarations": [{"name": "search"}]}]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeUpstream) -> Iterator[FakeUpstream]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def client(fake: FakeUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=5.0) as http:
        yield http


def chat_body(text: str = "Hello there, fake model!", **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": text},
        ],
        **extra,
    }


def anthropic_body(text: str = "Hello there", **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-3-5-sonnet-latest",
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        **extra,
    }


def gemini_body(text: str = "Hello there", **extra: Any) -> dict[str, Any]:
    return {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": text}]}],
        **extra,
    }


def sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# -- OpenAI -----------------------------------------------------------------


def test_chat_json_usage(client: httpx.Client, fake: FakeUpstream) -> None:
    response = client.post("/v1/chat/completions", json=chat_body(), headers=OPENAI)
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "gpt-4o-mini"
    assert data["id"].startswith("chatcmpl-fake-")
    assert data["choices"][0]["message"]["content"] == DEFAULT_REPLY
    assert data["choices"][0]["finish_reason"] == "stop"
    # "Be brief." (2) + "Hello there, fake model!" (4)
    assert data["usage"] == {
        "prompt_tokens": 6,
        "completion_tokens": 9,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    record = fake.requests[-1]
    assert record["finished"] and not record["client_disconnected"]
    assert record["json"]["model"] == "gpt-4o-mini"
    assert record["headers"]["authorization"] == f"Bearer {KEY}"


def test_chat_n_and_cached_tokens(client: httpx.Client) -> None:
    body = chat_body("hi [[cached:10]]", n=2)
    data = client.post("/v1/chat/completions", json=body, headers=OPENAI).json()
    assert [c["index"] for c in data["choices"]] == [0, 1]
    # words: "Be brief." (2) + "hi [[cached:10]]" (2) = 4, plus 10 cached
    assert data["usage"]["prompt_tokens"] == 14
    assert data["usage"]["prompt_tokens_details"] == {"cached_tokens": 10}
    assert data["usage"]["completion_tokens"] == 18


def test_chat_stream_concatenates_to_reply(client: httpx.Client) -> None:
    body = chat_body(stream=True)
    response = client.post("/v1/chat/completions", json=body, headers=OPENAI)
    assert response.headers["content-type"].startswith("text/event-stream")
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "",
        "refusal": None,
    }
    contents = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert len(contents) == 9
    assert "".join(contents) == DEFAULT_REPLY
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_stream_usage_only_with_include_usage(client: httpx.Client) -> None:
    options = {"include_usage": True}
    body = chat_body(stream=True, stream_options=options)
    data = sse_data(client.post("/v1/chat/completions", json=body, headers=OPENAI).text)
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 6
    assert chunks[-1]["usage"]["completion_tokens"] == 9

    body = chat_body('x [[fake:{"no_usage": true}]]', stream=True, stream_options=options)
    data = sse_data(client.post("/v1/chat/completions", json=body, headers=OPENAI).text)
    chunks = [json.loads(d) for d in data[:-1]]
    assert data[-1] == "[DONE]"
    assert all("usage" not in c for c in chunks)
    assert all(c["choices"] for c in chunks)


def test_scripted_500_then_default(client: httpx.Client, fake: FakeUpstream) -> None:
    fake.script({"status": 500})
    first = client.post("/v1/chat/completions", json=chat_body(), headers=OPENAI)
    assert first.status_code == 500
    error = first.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "server_error"
    second = client.post("/v1/chat/completions", json=chat_body(), headers=OPENAI)
    assert second.status_code == 200
    assert [r["behaviour_source"] for r in fake.requests] == ["script", "default"]


def test_429_has_retry_after(client: httpx.Client, fake: FakeUpstream) -> None:
    fake.script({"status": 429})
    response = client.post("/v1/chat/completions", json=chat_body(), headers=OPENAI)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_inline_directive_does_not_consume_script(client: httpx.Client, fake: FakeUpstream) -> None:
    fake.script({"reply": "from the script"})
    body = chat_body('go [[fake:{"status": 503}]]')
    assert client.post("/v1/chat/completions", json=body, headers=OPENAI).status_code == 503
    data = client.post("/v1/chat/completions", json=chat_body(), headers=OPENAI).json()
    assert data["choices"][0]["message"]["content"] == "from the script"
    assert data["usage"]["completion_tokens"] == 3


def test_cut_after(client: httpx.Client, fake: FakeUpstream) -> None:
    fake.script({"cut_after": 3})
    lines: list[str] = []
    body = chat_body(stream=True, stream_options={"include_usage": True})
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/v1/chat/completions", json=body, headers=OPENAI) as r,
    ):
        lines.extend(r.iter_lines())
    data = [line[6:] for line in lines if line.startswith("data: ")]
    assert "[DONE]" not in data
    chunks = [json.loads(d) for d in data]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks[1:]]
    assert contents == ["This", " is", " a"]
    assert all(c["usage"] is None for c in chunks)
    record = fake.wait_until_ended()
    assert record["cut"] and record["chunks_sent"] == 3
    assert not record["client_disconnected"]


def test_stall(client: httpx.Client) -> None:
    body = chat_body('x [[fake:{"stall": 0.3}]]')
    started = time.monotonic()
    response = client.post("/v1/chat/completions", json=body, headers=OPENAI)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert 0.3 <= elapsed < 1.5


def test_legacy_completions(client: httpx.Client) -> None:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say something nice"}
    data = client.post("/v1/completions", json=body, headers=OPENAI).json()
    assert data["object"] == "text_completion"
    assert data["choices"][0]["text"] == DEFAULT_REPLY
    assert data["usage"]["prompt_tokens"] == 3
    stream = client.post("/v1/completions", json={**body, "stream": True}, headers=OPENAI)
    data = sse_data(stream.text)
    assert data[-1] == "[DONE]"
    texts = [json.loads(d)["choices"][0]["text"] for d in data[:-1]]
    assert "".join(texts) == DEFAULT_REPLY


def test_embeddings_float_and_base64(client: httpx.Client) -> None:
    body = {"model": "text-embedding-3-small", "input": ["one two", "three"]}
    data = client.post("/v1/embeddings", json=body, headers=OPENAI).json()
    assert data["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    vectors = [item["embedding"] for item in data["data"]]
    assert [len(v) for v in vectors] == [8, 8]
    assert vectors[0] == embedding_vector("one two")
    body["encoding_format"] = "base64"
    data = client.post("/v1/embeddings", json=body, headers=OPENAI).json()
    decoded = [list(struct.unpack("<8f", base64.b64decode(item["embedding"]))) for item in data["data"]]
    assert decoded == vectors


def test_models(client: httpx.Client) -> None:
    data = client.get("/v1/models", headers=OPENAI).json()
    ids = [m["id"] for m in data["data"]]
    assert "gpt-4o-mini" in ids and "claude-3-5-sonnet-latest" in ids
    assert all(m["owned_by"] == "fake" for m in data["data"])


def test_azure_requires_api_version(client: httpx.Client) -> None:
    path = "/openai/deployments/my-gpt/chat/completions"
    headers = {"api-key": KEY}
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert client.post(path, json=body, headers=headers).status_code == 400
    response = client.post(path, params={"api-version": "2024-06-01"}, json=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["model"] == "my-gpt"


# -- errors and auth ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "headers", "check"),
    [
        (
            "/v1/chat/completions",
            chat_body(),
            {"Authorization": "Bearer wrong"},
            lambda d: d["error"]["code"] == "invalid_api_key",
        ),
        (
            "/v1/messages",
            anthropic_body(),
            {"x-api-key": "wrong", "anthropic-version": "2023-06-01"},
            lambda d: d["type"] == "error" and d["error"]["type"] == "authentication_error",
        ),
        (
            "/v1beta/models/gemini-1.5-flash:generateContent",
            gemini_body(),
            {"x-goog-api-key": "wrong"},
            lambda d: d["error"]["code"] == 401 and d["error"]["status"] == "UNAUTHENTICATED",
        ),
        (
            "/openai/deployments/d/chat/completions?api-version=2024-06-01",
            chat_body(),
            {},
            lambda d: d["error"]["type"] == "invalid_request_error",
        ),
    ],
)
def test_auth_401_in_protocol_format(
    client: httpx.Client, fake: FakeUpstream, path: str, body: Any, headers: Any, check: Any
) -> None:
    fake.script({"reply": "unused"})
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 401
    assert check(response.json())
    # a rejected request does not consume the script
    assert fake.requests[-1]["behaviour"] is None


def test_bad_json_and_unknown_path(client: httpx.Client) -> None:
    response = client.post(
        "/v1/messages",
        content=b"{not json",
        headers={**ANTHROPIC, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = client.post("/v1/nothing-here", json={})
    assert response.status_code == 404
    assert "error" in response.json()


def test_anthropic_requires_max_tokens_and_version(client: httpx.Client) -> None:
    body = anthropic_body()
    del body["max_tokens"]
    response = client.post("/v1/messages", json=body, headers=ANTHROPIC)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = client.post("/v1/messages", json=anthropic_body(), headers={"x-api-key": KEY})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, "authentication_error"), (429, "rate_limit_error"), (529, "overloaded_error")],
)
def test_anthropic_scripted_errors(client: httpx.Client, fake: FakeUpstream, status: int, kind: str) -> None:
    fake.script({"status": status})
    response = client.post("/v1/messages", json=anthropic_body(), headers=ANTHROPIC)
    assert response.status_code == status
    assert response.json() == {
        "type": "error",
        "error": {"type": kind, "message": f"fake upstream: scripted error {status}"},
    }


# -- Anthropic ----------------------------------------------------------------


def test_anthropic_json_and_cache(client: httpx.Client) -> None:
    body = anthropic_body("cached prompt [[cached:40]]")
    data = client.post("/v1/messages", json=body, headers=ANTHROPIC).json()
    assert data["type"] == "message"
    assert data["id"].startswith("msg_fake_")
    assert data["content"] == [{"type": "text", "text": DEFAULT_REPLY}]
    assert data["stop_reason"] == "end_turn"
    assert data["usage"] == {
        "input_tokens": 5,
        "output_tokens": 9,
        "cache_read_input_tokens": 40,
        "cache_creation_input_tokens": 0,
    }
    count = client.post("/v1/messages/count_tokens", json=body, headers=ANTHROPIC)
    assert count.json() == {"input_tokens": 5}


def test_anthropic_stream_event_order(client: httpx.Client) -> None:
    body = anthropic_body(stream=True)
    response = client.post("/v1/messages", json=body, headers=ANTHROPIC)
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 9,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    start = events[0][1]["message"]
    assert start["content"] == []
    assert start["usage"]["input_tokens"] == 4
    assert start["usage"]["output_tokens"] == 1
    text = "".join(data["delta"]["text"] for name, data in events[3:12])
    assert text == DEFAULT_REPLY
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {"output_tokens": 9}


# -- Gemini -------------------------------------------------------------------


def test_gemini_generate_and_sse(client: httpx.Client) -> None:
    path = "/v1beta/models/gemini-1.5-flash:generateContent"
    data = client.post(path, json=gemini_body(), headers=GEMINI).json()
    assert data["candidates"][0]["content"]["parts"] == [{"text": DEFAULT_REPLY}]
    assert data["usageMetadata"] == {
        "promptTokenCount": 4,
        "candidatesTokenCount": 9,
        "totalTokenCount": 13,
    }
    path = "/v1beta/models/gemini-1.5-flash:streamGenerateContent"
    response = client.post(path, params={"alt": "sse", "key": KEY}, json=gemini_body())
    chunks = [json.loads(d) for d in sse_data(response.text)]
    assert len(chunks) == 9
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == DEFAULT_REPLY
    assert all("usageMetadata" not in c for c in chunks[:-1])
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["totalTokenCount"] == 13


# -- tool calls ---------------------------------------------------------------


def test_tool_call_openai(client: httpx.Client) -> None:
    inline = 'weather [[fake:{"tool_call": true}]]'
    body = chat_body(inline, tools=TOOLS_OPENAI)
    arguments = json.dumps({"query": inline})
    data = client.post("/v1/chat/completions", json=body, headers=OPENAI).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "search",
        "arguments": arguments,
    }
    assert data["usage"]["completion_tokens"] == len(arguments.split())

    body["stream"] = True
    chunks = [
        json.loads(d)
        for d in sse_data(client.post("/v1/chat/completions", json=body, headers=OPENAI).text)[:-1]
    ]
    header = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert header["id"] == "call_fake_1" and header["function"]["name"] == "search"
    fragments = [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-1]]
    assert len(fragments) >= 2
    assert "".join(fragments) == arguments
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_call_anthropic(client: httpx.Client, fake: FakeUpstream) -> None:
    fake.script({"tool_call": True}, {"tool_call": True})
    body = anthropic_body("weather in Paris", tools=TOOLS_ANTHROPIC)
    data = client.post("/v1/messages", json=body, headers=ANTHROPIC).json()
    assert data["stop_reason"] == "tool_use"
    assert data["content"] == [
        {
            "type": "tool_use",
            "id": "toolu_fake_1",
            "name": "search",
            "input": {"query": "weather in Paris"},
        }
    ]
    events = sse_events(client.post("/v1/messages", json={**body, "stream": True}, headers=ANTHROPIC).text)
    assert events[1][1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_fake_1",
        "name": "search",
        "input": {},
    }
    partial = [d["delta"]["partial_json"] for n, d in events if n == "content_block_delta"]
    assert len(partial) >= 2
    assert json.loads("".join(partial)) == {"query": "weather in Paris"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_tool_call_gemini(client: httpx.Client, fake: FakeUpstream) -> None:
    fake.script({"tool_call": True})
    path = "/v1beta/models/gemini-1.5-flash:generateContent"
    body = gemini_body("weather in Paris", tools=TOOLS_GEMINI)
    data = client.post(path, json=body, headers=GEMINI).json()
    candidate = data["candidates"][0]
    assert candidate["finishReason"] == "STOP"
    assert candidate["content"]["parts"] == [
        {"functionCall": {"name": "search", "args": {"query": "weather in Paris"}}}
    ]


# -- agent turns: call a tool, then answer with its result ----------------------

AGENT = {
    "tool_call": {"name": "search", "arguments": {"q": "paris"}},
    "after_tool_result": {"reply": "It said: {tool_result}"},
}
ASK = f"weather [[fake:{json.dumps(AGENT)}]]"
ANSWER = "It said: sunny 21C"


def chat_text(client: httpx.Client, body: dict[str, Any]) -> str:
    """The answer text of a chat completion, read as JSON and as a stream (both must agree)."""
    data = client.post("/v1/chat/completions", json=body, headers=OPENAI).json()
    stream = client.post("/v1/chat/completions", json={**body, "stream": True}, headers=OPENAI)
    chunks = [json.loads(d) for d in sse_data(stream.text)[:-1]]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == data["choices"][0]["message"]["content"]
    return streamed


def test_agent_turn_openai(client: httpx.Client, fake: FakeUpstream) -> None:
    body = chat_body(ASK, tools=TOOLS_OPENAI)
    data = client.post("/v1/chat/completions", json=body, headers=OPENAI).json()
    call = data["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "search", "arguments": '{"q": "paris"}'}
    assert data["usage"]["completion_tokens"] == 2
    stream = client.post("/v1/chat/completions", json={**body, "stream": True}, headers=OPENAI)
    chunks = [json.loads(d) for d in sse_data(stream.text)[:-1]]
    fragments = [c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-1]]
    assert json.loads("".join(fragments)) == {"q": "paris"}

    body["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny 21C"},
    ]
    assert chat_text(client, body) == ANSWER
    assert [r["behaviour_source"] for r in fake.requests] == ["inline"] * 4
    assert fake.requests[-1]["behaviour"] == {"reply": "It said: {tool_result}"}


def test_agent_turn_anthropic(client: httpx.Client) -> None:
    body = anthropic_body(ASK, tools=TOOLS_ANTHROPIC)
    data = client.post("/v1/messages", json=body, headers=ANTHROPIC).json()
    assert data["stop_reason"] == "tool_use"
    tool_use = data["content"][0]
    assert (tool_use["name"], tool_use["input"]) == ("search", {"q": "paris"})
    events = sse_events(client.post("/v1/messages", json={**body, "stream": True}, headers=ANTHROPIC).text)
    partial = [d["delta"]["partial_json"] for n, d in events if n == "content_block_delta"]
    assert json.loads("".join(partial)) == {"q": "paris"}

    text = [{"type": "text", "text": "sunny 21C"}]
    result = {"type": "tool_result", "tool_use_id": tool_use["id"], "content": text}
    reminder = {"type": "text", "text": "<system-reminder>no directive here</system-reminder>"}
    body["messages"] += [
        {"role": "assistant", "content": data["content"]},
        {"role": "user", "content": [result, reminder]},
    ]
    data = client.post("/v1/messages", json=body, headers=ANTHROPIC).json()
    assert data["stop_reason"] == "end_turn" and data["content"] == [{"type": "text", "text": ANSWER}]
    events = sse_events(client.post("/v1/messages", json={**body, "stream": True}, headers=ANTHROPIC).text)
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == ANSWER


def test_agent_turn_gemini(client: httpx.Client) -> None:
    base = "/v1beta/models/gemini-1.5-flash"
    body = gemini_body(ASK, tools=TOOLS_GEMINI)
    call = {"functionCall": {"name": "search", "args": {"q": "paris"}}}
    data = client.post(f"{base}:generateContent", json=body, headers=GEMINI).json()
    assert data["candidates"][0]["content"]["parts"] == [call]
    stream = client.post(f"{base}:streamGenerateContent", params={"alt": "sse"}, json=body, headers=GEMINI)
    assert [json.loads(d)["candidates"][0]["content"]["parts"] for d in sse_data(stream.text)] == [[call]]

    response = {"functionResponse": {"name": "search", "response": {"content": "sunny 21C"}}}
    body["contents"] += [{"role": "model", "parts": [call]}, {"role": "user", "parts": [response]}]
    data = client.post(f"{base}:generateContent", json=body, headers=GEMINI).json()
    assert data["candidates"][0]["content"]["parts"] == [{"text": ANSWER}]
    for params in ({"alt": "sse"}, {}):
        stream = client.post(f"{base}:streamGenerateContent", params=params, json=body, headers=GEMINI)
        chunks = [json.loads(d) for d in sse_data(stream.text)] if params else stream.json()
        assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == ANSWER


def test_named_tool_not_offered_answers_with_text(client: httpx.Client) -> None:
    body = anthropic_body(ASK)  # no tools
    data = client.post("/v1/messages", json=body, headers=ANTHROPIC).json()
    assert data["content"] == [{"type": "text", "text": DEFAULT_REPLY}]
    assert chat_text(client, chat_body(ASK, tools=[])) == DEFAULT_REPLY


def test_tool_call_validation(fake: FakeUpstream) -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        fake.script({"tool_call": {"tool": "x"}})
    with pytest.raises(ValueError, match="arguments must be an object"):
        fake.script({"tool_call": {"name": "x", "arguments": "{}"}})
    with pytest.raises(ValueError, match="unknown behaviour key"):
        fake.script({"after_tool_result": {"bogus": 1}})


# -- disconnects and control API ----------------------------------------------


def test_client_disconnect_is_recorded(client: httpx.Client, fake: FakeUpstream) -> None:
    fake.script({"chunk_delay": 0.2})
    body = chat_body(stream=True)
    contents = 0
    with client.stream("POST", "/v1/chat/completions", json=body, headers=OPENAI) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content": "' in line and '""' not in line:
                contents += 1
                if contents == 2:
                    break
    closed_at = time.monotonic()
    record = fake.wait_until_ended(timeout=1.0)
    assert record["client_disconnected"] is True
    assert record["finished"] is False
    assert record["chunks_sent"] < 9
    assert record["ended_at"] - closed_at < 1.0


def test_http_control_api(client: httpx.Client, fake: FakeUpstream) -> None:
    response = client.post("/_fake/script", json={"behaviours": [{"status": 502}, {}]})
    assert response.json() == {"queued": 2}
    assert client.post("/_fake/script", json={"behaviours": [{"bogus": 1}]}).status_code == 400
    assert client.post("/v1/chat/completions", json=chat_body(), headers=OPENAI).status_code == 502
    records = client.get("/_fake/requests").json()["requests"]
    assert len(records) == 1
    assert records[0]["behaviour"] == {"status": 502}
    assert records[0]["status"] == 502
    assert client.post("/_fake/reset").json() == {"ok": True}
    assert client.get("/_fake/requests").json() == {"requests": []}
    # the queued {} was dropped by the reset
    assert client.post("/v1/chat/completions", json=chat_body(), headers=OPENAI).status_code == 200
    assert fake.requests[-1]["behaviour_source"] == "default"


def test_script_validation(fake: FakeUpstream) -> None:
    with pytest.raises(ValueError, match="unknown behaviour key"):
        fake.script({"stauts": 500})
    with pytest.raises(ValueError, match="wrong type"):
        fake.script({"stall": "1"})


# -- stop sequences -------------------------------------------------------------

STOP_REPLY = "Alpha beta END gamma STOP delta"


def stop_directive(**extra: Any) -> str:
    return f"go [[fake:{json.dumps({'reply': STOP_REPLY, **extra})}]]"


def test_stop_openai_chat(client: httpx.Client, fake: FakeUpstream) -> None:
    for stop, cut, hit in (
        ("END", "Alpha beta ", "END"),
        (["STOP", "END"], "Alpha beta ", "END"),  # the earliest in the text wins
        (["STOP", "nowhere"], "Alpha beta END gamma ", "STOP"),
        ("nowhere", STOP_REPLY, None),
    ):
        body = chat_body(stop_directive(), stop=stop)
        data = client.post("/v1/chat/completions", json=body, headers=OPENAI).json()
        choice = data["choices"][0]
        assert (choice["message"]["content"], choice["finish_reason"]) == (cut, "stop")
        assert data["usage"]["completion_tokens"] == len(cut.split())
        record = fake.requests[-1]
        assert record["stop_sequences"] == ([stop] if isinstance(stop, str) else stop)
        assert record["stop_hit"] == hit
        stream = client.post("/v1/chat/completions", json={**body, "stream": True}, headers=OPENAI)
        chunks = [json.loads(d) for d in sse_data(stream.text)[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == cut
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    completion = {"model": "gpt-3.5-turbo-instruct", "prompt": stop_directive(), "stop": "END"}
    data = client.post("/v1/completions", json=completion, headers=OPENAI).json()
    assert data["choices"][0]["text"] == "Alpha beta "


def test_stop_anthropic(client: httpx.Client, fake: FakeUpstream) -> None:
    body = anthropic_body(stop_directive(), stop_sequences=["STOP", "END"])
    data = client.post("/v1/messages", json=body, headers=ANTHROPIC).json()
    assert data["content"] == [{"type": "text", "text": "Alpha beta "}]
    assert (data["stop_reason"], data["stop_sequence"]) == ("stop_sequence", "END")
    assert data["usage"]["output_tokens"] == 2
    assert fake.requests[-1]["stop_sequences"] == ["STOP", "END"]
    assert fake.requests[-1]["stop_hit"] == "END"
    events = sse_events(client.post("/v1/messages", json={**body, "stream": True}, headers=ANTHROPIC).text)
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "Alpha beta "
    delta = next(d for n, d in events if n == "message_delta")
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    # not hit: a natural end
    data = client.post("/v1/messages", json={**body, "stop_sequences": ["zzz"]}, headers=ANTHROPIC).json()
    assert (data["stop_reason"], data["stop_sequence"]) == ("end_turn", None)
    assert data["content"][0]["text"] == STOP_REPLY


def test_stop_gemini(client: httpx.Client, fake: FakeUpstream) -> None:
    base = "/v1beta/models/gemini-1.5-flash"
    body = gemini_body(stop_directive(), generationConfig={"stopSequences": ["END"]})
    data = client.post(f"{base}:generateContent", json=body, headers=GEMINI).json()
    candidate = data["candidates"][0]
    assert candidate["content"]["parts"] == [{"text": "Alpha beta "}]
    assert candidate["finishReason"] == "STOP"
    assert data["usageMetadata"]["candidatesTokenCount"] == 2
    assert fake.requests[-1]["stop_sequences"] == ["END"] and fake.requests[-1]["stop_hit"] == "END"
    stream = client.post(f"{base}:streamGenerateContent", params={"alt": "sse"}, json=body, headers=GEMINI)
    chunks = [json.loads(d) for d in sse_data(stream.text)]
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "Alpha beta "
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


# -- reasoning -----------------------------------------------------------------


def test_reasoning_openai(client: httpx.Client) -> None:
    thought = "Let me think about it."
    body = chat_body(f"x [[fake:{json.dumps({'reasoning': thought, 'reply': 'Done.'})}]]")
    data = client.post("/v1/chat/completions", json=body, headers=OPENAI).json()
    message = data["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == (thought, "Done.")
    assert data["usage"]["completion_tokens"] == 5 + 1
    assert data["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}
    options = {"include_usage": True}
    stream = client.post(
        "/v1/chat/completions", json={**body, "stream": True, "stream_options": options}, headers=OPENAI
    )
    chunks = [json.loads(d) for d in sse_data(stream.text)[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant"
    reasoning = [d["reasoning_content"] for d in deltas if "reasoning_content" in d]
    assert reasoning == ["Let", " me", " think", " about", " it."]
    kinds = [k for d in deltas for k in ("reasoning_content", "content") if d.get(k)]
    assert kinds == ["reasoning_content"] * 5 + ["content"]  # reasoning first
    assert chunks[-1]["usage"]["completion_tokens"] == 6
    # without the behaviour: no reasoning_content at all
    plain = client.post("/v1/chat/completions", json=chat_body(), headers=OPENAI).json()
    assert "reasoning_content" not in plain["choices"][0]["message"]


# -- several tool calls in one turn --------------------------------------------

CALLS = [
    {"name": "read", "arguments": {"path": "/tmp/a b.txt"}},
    {"name": "grep", "arguments": {"pattern": "x y z", "path": "."}},
    {"name": "ls", "arguments": {}},
]


def openai_tool_stream(client: httpx.Client, behaviour: dict[str, Any]) -> list[dict[str, Any]]:
    body = chat_body(f"x [[fake:{json.dumps(behaviour)}]]", tools=TOOLS_OPENAI, stream=True)
    response = client.post("/v1/chat/completions", json=body, headers=OPENAI)
    chunks = [json.loads(d) for d in sse_data(response.text)[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    return [call for c in chunks for call in c["choices"][0]["delta"].get("tool_calls") or []]


def assemble(deltas: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        call = calls.setdefault(delta["index"], {"id": None, "name": None, "arguments": ""})
        call["id"] = delta.get("id") or call["id"]
        call["name"] = delta.get("function", {}).get("name") or call["name"]
        call["arguments"] += delta["function"].get("arguments") or ""
    return calls


def test_tool_calls_openai(client: httpx.Client) -> None:
    body = chat_body(f"x [[fake:{json.dumps({'tool_calls': CALLS})}]]", tools=TOOLS_OPENAI)
    data = client.post("/v1/chat/completions", json=body, headers=OPENAI).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_fake_0", "call_fake_1", "call_fake_2"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        (c["name"], c["arguments"]) for c in CALLS
    ]
    assert data["usage"]["completion_tokens"] == sum(len(json.dumps(c["arguments"]).split()) for c in CALLS)

    deltas = openai_tool_stream(client, {"tool_calls": CALLS})
    # sequential: every fragment of a call before the next call starts
    assert [d["index"] for d in deltas] == sorted(d["index"] for d in deltas)
    assembled = assemble(deltas)
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in assembled.values()] == [
        (f"call_fake_{i}", c["name"], c["arguments"]) for i, c in enumerate(CALLS)
    ]


def test_tool_calls_openai_interleaved(client: httpx.Client) -> None:
    deltas = openai_tool_stream(client, {"tool_calls": CALLS, "interleave": True})
    fragments = [d["index"] for d in deltas if d["function"].get("arguments")]
    # round robin: 0, 1, 2, 0, 1, 2, ... while each call has fragments left
    assert fragments[:6] == [0, 1, 2, 0, 1, 2]
    assert fragments != sorted(fragments)
    headers = [d for d in deltas if d.get("id")]
    assert [(h["index"], h["id"], h["function"]["name"]) for h in headers] == [
        (i, f"call_fake_{i}", c["name"]) for i, c in enumerate(CALLS)
    ]
    assembled = assemble(deltas)
    assert [json.loads(assembled[i]["arguments"]) for i in range(3)] == [c["arguments"] for c in CALLS]


def test_tool_calls_anthropic(client: httpx.Client) -> None:
    body = anthropic_body(f"x [[fake:{json.dumps({'tool_calls': CALLS[:2]})}]]", tools=TOOLS_ANTHROPIC)
    data = client.post("/v1/messages", json=body, headers=ANTHROPIC).json()
    assert data["stop_reason"] == "tool_use"
    assert data["content"] == [
        {"type": "tool_use", "id": f"toolu_fake_{i}", "name": c["name"], "input": c["arguments"]}
        for i, c in enumerate(CALLS[:2])
    ]
    events = sse_events(client.post("/v1/messages", json={**body, "stream": True}, headers=ANTHROPIC).text)
    assert [n for n, _ in events][:3] == ["message_start", "content_block_start", "ping"]
    starts = [d for n, d in events if n == "content_block_start"]
    assert [(s["index"], s["content_block"]["id"]) for s in starts] == [
        (0, "toolu_fake_0"),
        (1, "toolu_fake_1"),
    ]
    # one block after the other: start 0, deltas 0, stop 0, start 1, deltas 1, stop 1
    blocks = [(n, d["index"]) for n, d in events if n.startswith("content_block")]
    assert [index for _, index in blocks] == sorted(index for _, index in blocks)
    assert [d["index"] for n, d in events if n == "content_block_stop"] == [0, 1]
    for index, spec in enumerate(CALLS[:2]):
        deltas = [d["delta"] for n, d in events if n == "content_block_delta" and d["index"] == index]
        assert json.loads("".join(d["partial_json"] for d in deltas)) == spec["arguments"]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_tool_calls_gemini(client: httpx.Client) -> None:
    base = "/v1beta/models/gemini-1.5-flash"
    body = gemini_body(f"x [[fake:{json.dumps({'tool_calls': CALLS})}]]", tools=TOOLS_GEMINI)
    parts = [{"functionCall": {"name": c["name"], "args": c["arguments"]}} for c in CALLS]
    data = client.post(f"{base}:generateContent", json=body, headers=GEMINI).json()
    assert data["candidates"][0]["content"]["parts"] == parts
    stream = client.post(f"{base}:streamGenerateContent", params={"alt": "sse"}, json=body, headers=GEMINI)
    assert [json.loads(d)["candidates"][0]["content"]["parts"] for d in sse_data(stream.text)] == [parts]


def test_tool_calls_validation(fake: FakeUpstream) -> None:
    with pytest.raises(ValueError, match="not both"):
        fake.script({"tool_call": True, "tool_calls": [{"name": "x"}]})
    with pytest.raises(ValueError, match="needs a 'name'|need a 'name'"):
        fake.script({"tool_calls": [{"arguments": {}}]})
    with pytest.raises(ValueError, match="must not be empty"):
        fake.script({"tool_calls": []})
    with pytest.raises(ValueError, match="wrong type"):
        fake.script({"interleave": "yes"})
    with pytest.raises(ValueError, match="wrong type"):
        fake.script({"reasoning": 1})


# -- Gemini candidates, recorded usage ------------------------------------------


def test_gemini_candidate_count(client: httpx.Client) -> None:
    base = "/v1beta/models/gemini-1.5-flash"
    body = gemini_body(generationConfig={"candidateCount": 2})
    data = client.post(f"{base}:generateContent", json=body, headers=GEMINI).json()
    assert [c["index"] for c in data["candidates"]] == [0, 1]
    assert all(c["content"]["parts"] == [{"text": DEFAULT_REPLY}] for c in data["candidates"])
    assert data["usageMetadata"]["candidatesTokenCount"] == 18
    stream = client.post(f"{base}:streamGenerateContent", params={"alt": "sse"}, json=body, headers=GEMINI)
    chunks = [json.loads(d) for d in sse_data(stream.text)]
    for index in (0, 1):
        text = "".join(c["candidates"][index]["content"]["parts"][0]["text"] for c in chunks)
        assert text == DEFAULT_REPLY
    bad = gemini_body(generationConfig={"candidateCount": 9})
    assert client.post(f"{base}:generateContent", json=bad, headers=GEMINI).status_code == 400


def test_recorded_usage(client: httpx.Client, fake: FakeUpstream) -> None:
    client.post("/v1/chat/completions", json=chat_body(), headers=OPENAI)
    assert fake.requests[-1]["usage"]["completion_tokens"] == 9
    client.post("/v1/chat/completions", json=chat_body(stream=True), headers=OPENAI)
    assert fake.requests[-1]["usage"] is None  # a stream without include_usage reports none
    options = {"include_usage": True}
    client.post("/v1/chat/completions", json=chat_body(stream=True, stream_options=options), headers=OPENAI)
    assert fake.requests[-1]["usage"]["prompt_tokens"] == 6
    client.post("/v1/messages", json=anthropic_body(stream=True), headers=ANTHROPIC)
    assert fake.requests[-1]["usage"] == {
        "input_tokens": 4,
        "output_tokens": 9,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    client.post("/v1beta/models/g:generateContent", json=gemini_body(), headers=GEMINI)
    assert fake.requests[-1]["usage"]["totalTokenCount"] == 13
    client.post("/v1/chat/completions", json=chat_body('x [[fake:{"no_usage": true}]]'), headers=OPENAI)
    assert fake.requests[-1]["usage"] is None
    fake.script({"status": 500})
    client.post("/v1/chat/completions", json=chat_body(), headers=OPENAI)
    assert fake.requests[-1]["usage"] is None and fake.requests[-1]["stop_sequences"] == []


# -- Responses API -------------------------------------------------------------


def test_responses_json_usage_and_store(client: httpx.Client, fake: FakeUpstream) -> None:
    body = {"model": "gpt-4o-mini", "instructions": "Be brief.", "input": "Hello there [[cached:2]]"}
    response = client.post("/v1/responses", headers=OPENAI, json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["object"] == "response" and data["status"] == "completed" and data["model"] == "gpt-4o-mini"
    assert data["id"].startswith("resp_") and data["output"][0]["content"][0]["text"] == DEFAULT_REPLY
    # W = "Be brief." (2) + "Hello there [[cached:2]]" (3); N = 2; C = 9
    assert data["usage"] == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens": 9,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 16,
    }
    assert fake.requests[-1]["json"] == body  # recorded as sent
    stored = client.get(f"/v1/responses/{data['id']}", headers=OPENAI)
    assert stored.status_code == 200 and stored.json()["id"] == data["id"]
    items = client.get(f"/v1/responses/{data['id']}/input_items", headers=OPENAI).json()
    assert items["object"] == "list" and items["data"][0]["content"] == "Hello there [[cached:2]]"
    deleted = client.delete(f"/v1/responses/{data['id']}", headers=OPENAI)
    assert deleted.json() == {"id": data["id"], "object": "response", "deleted": True}
    assert client.get(f"/v1/responses/{data['id']}", headers=OPENAI).status_code == 404


def test_responses_stream_events(client: httpx.Client) -> None:
    body = {"model": "gpt-4o-mini", "input": "Hello", "stream": True}
    response = client.post("/v1/responses", headers=OPENAI, json=body)
    events = sse_events(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    deltas = "".join(data["delta"] for kind, data in events if kind == "response.output_text.delta")
    assert deltas == DEFAULT_REPLY and "[DONE]" not in response.text
    assert events[-1][1]["response"]["usage"]["output_tokens"] == 9


def test_responses_tool_call_and_previous_response_id(client: httpx.Client) -> None:
    tools = [{"type": "function", "name": "search", "parameters": {}}]
    directive = '[[fake:{"tool_call": true, "after_tool_result": {"reply": "Found {tool_result}"}}]]'
    first = client.post(
        "/v1/responses", headers=OPENAI, json={"model": "m", "input": f"look {directive}", "tools": tools}
    ).json()
    (call,) = first["output"]
    assert call["type"] == "function_call" and call["name"] == "search" and call["call_id"] == "call_fake_1"
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "42"}
    second = client.post(
        "/v1/responses",
        headers=OPENAI,
        json={"model": "m", "input": [output], "tools": tools, "previous_response_id": first["id"]},
    ).json()
    assert second["output"][0]["content"][0]["text"] == "Found 42"
    unknown = client.post(
        "/v1/responses",
        headers=OPENAI,
        json={"model": "m", "input": "x", "previous_response_id": "resp_nope"},
    )
    assert unknown.status_code == 400 and "resp_nope" in unknown.json()["error"]["message"]


def test_responses_reasoning_encrypted_content(client: httpx.Client) -> None:
    body = {
        "model": "m",
        "input": '[[fake:{"reasoning": "think hard"}]] hi',
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"summary": "auto"},
        "store": False,
    }
    data = client.post("/v1/responses", headers=OPENAI, json=body).json()
    reasoning = data["output"][0]
    assert reasoning["type"] == "reasoning" and reasoning["summary"][0]["text"] == "think hard"
    assert reasoning["encrypted_content"].startswith("fake-enc:")
    assert data["usage"]["output_tokens_details"]["reasoning_tokens"] == 2
    back = {"model": "m", "input": [reasoning, {"role": "user", "content": "more"}]}
    assert client.post("/v1/responses", headers=OPENAI, json=back).status_code == 200
    forged = {**reasoning, "encrypted_content": "someone-else"}
    refused = client.post("/v1/responses", headers=OPENAI, json={"model": "m", "input": [forged]})
    assert refused.status_code == 400
    assert client.get(f"/v1/responses/{data['id']}", headers=OPENAI).status_code == 404  # store false


def test_responses_azure(client: httpx.Client) -> None:
    azure = {"api-key": KEY}
    body = {"model": "my-deployment", "input": "hi"}
    assert client.post("/openai/v1/responses", headers=azure, json=body).json()["model"] == "my-deployment"
    assert client.post("/openai/responses", headers=azure, json=body).status_code == 400
    ok = client.post("/openai/responses?api-version=2025-04-01-preview", headers=azure, json=body)
    assert ok.status_code == 200
