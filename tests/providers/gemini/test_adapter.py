"""GeminiAdapter: OpenAI chat <-> Gemini generateContent, golden files + targeted checks."""

from __future__ import annotations

import json
import random

import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from providers.base import Target, Usage
from providers.gemini.adapter import (
    SIGNATURE_SENTINEL,
    GeminiAdapter,
    GeminiStreamTranslator,
    gemini_schema,
    gemini_to_openai,
    openai_to_gemini,
)
from tests.providers.golden import (
    check_json,
    check_sse,
    feed_all,
    feed_split_at,
    parse_sse,
    read_bytes,
    read_json,
    usage_fields,
)

CREATED = 1_700_000_000
ADAPTER = GeminiAdapter()
TARGET = Target(
    base_url="https://generativelanguage.googleapis.com/v1beta",
    api_key="AIza-test",
    upstream_model="gemini-2.5-flash",
    extra_headers={"x-goog-user-project": "demo"},
    extra_params={
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "generationConfig": {"thinkingConfig": {"thinkingBudget": 1024}},
    },
)
STREAMS = {"stream_function_calls": True, "stream_text": False, "stream_error": True}


def translate(
    case: str, *, step: int | None = None, data: bytes | None = None
) -> tuple[GeminiStreamTranslator, bytes]:
    translator = GeminiStreamTranslator(model="gemini-flash", include_usage=STREAMS[case], created=CREATED)
    raw = read_bytes(f"gemini/{case}.in.sse") if data is None else data
    return translator, feed_all(translator, raw, step=step)


def user(text: str = "hi") -> dict:
    return {"role": "user", "content": text}


# --------------------------------------------------------------------------- golden


def test_request_golden():
    request = ADAPTER.chat_request(read_json("gemini/request_agent.in.json"), TARGET, stream=False)
    check_json(
        "gemini/request_agent.out.json",
        {
            "method": request.method,
            "url": request.url,
            "headers": request.headers,
            "body": orjson.loads(request.body),
        },
    )


@pytest.mark.parametrize("case", ["response_function_calls", "response_candidates"])
def test_response_golden(case):
    result, usage = gemini_to_openai(
        read_json(f"gemini/{case}.in.json"), model="gemini-flash", created=CREATED
    )
    check_json(f"gemini/{case}.out.json", {"response": result, "usage": usage_fields(usage)})
    ChatCompletion.model_validate(result)


@pytest.mark.parametrize("case", sorted(STREAMS))
def test_stream_golden(case):
    _, out = translate(case)
    check_sse(f"gemini/{case}.out.sse", out)


@pytest.mark.parametrize("case", sorted(STREAMS))
def test_stream_byte_by_byte_equals_whole(case):
    whole_translator, whole = translate(case)
    split_translator, split = translate(case, step=1)
    assert split == whole
    assert (split_translator.usage, split_translator.finished) == (
        whole_translator.usage,
        whole_translator.finished,
    )
    assert split_translator.text_parts == whole_translator.text_parts


@pytest.mark.parametrize("seed", range(10))
def test_stream_random_splits_with_crlf(seed):
    data = read_bytes("gemini/stream_function_calls.in.sse").replace(b"\n", b"\r\n")
    cuts = sorted(random.Random(seed).sample(range(1, len(data)), 30))
    translator = GeminiStreamTranslator(model="gemini-flash", include_usage=True, created=CREATED)
    assert feed_split_at(translator, data, cuts) == translate("stream_function_calls")[1]


# --------------------------------------------------------------------------- stream semantics


def test_stream_usage_from_last_metadata_and_done_from_close():
    translator = GeminiStreamTranslator(model="gemini-flash", include_usage=False, created=CREATED)
    out = translator.feed(read_bytes("gemini/stream_text.in.sse"))
    assert translator.finished is True
    assert b"[DONE]" not in out  # sent by close(): usage may still change until the end
    assert translator.usage == Usage(prompt_tokens=8, completion_tokens=6)
    assert translator.close() == b"data: [DONE]\n\n"
    assert translator.close() == b""
    assert translator.text_parts == ["Hello", ", world — ☀️", "!"]
    assert translator.text_chars == len("Hello, world — ☀️!")


def test_stream_is_accepted_by_openai_sdk_accumulator():
    translator, out = translate("stream_function_calls")
    state = ChatCompletionStreamState()
    for _, data in parse_sse(out)[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(data))
    choice = state.get_final_completion().choices[0]
    expected, _ = gemini_to_openai(
        read_json("gemini/response_function_calls.in.json"), model="m", created=CREATED
    )
    message = expected["choices"][0]["message"]
    assert choice.finish_reason == expected["choices"][0]["finish_reason"] == "tool_calls"
    assert choice.message.content == message["content"] == "Checking both cities."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]
    ]
    assert [c.id for c in choice.message.tool_calls] == [
        "call_Fk5RaPnYLo2Vz7IPnJfF6Ag_0",
        "call_Fk5RaPnYLo2Vz7IPnJfF6Ag_1",
    ]
    assert translator.usage == Usage(prompt_tokens=310, completion_tokens=142, cached_tokens=256)


@pytest.mark.parametrize(
    ("case", "marker"),
    [
        ("stream_text", b'data: {"candidates": [{"content": {"parts": [{"text": "!"}'),
        ("stream_function_calls", b'"text": "both'),
    ],
)
def test_cut_stream_is_not_finished(case, marker):
    data = read_bytes(f"gemini/{case}.in.sse")
    data = data[: data.index(marker) + len(marker)]  # complete lines, then a partial one
    translator = GeminiStreamTranslator(model="gemini-flash", include_usage=True, created=CREATED)
    out = translator.feed(data)
    assert translator.close() == b""
    assert translator.finished is False
    assert b'finish_reason":"' not in out and b"[DONE]" not in out


def test_cut_stream_at_a_line_boundary_is_not_finished():
    data = read_bytes("gemini/stream_text.in.sse")
    data = data[: data.index(b'data: {"candidates": [{"content": {"parts": [{"text": "!"}')]
    translator, out = translate("stream_text", data=data)
    assert translator.finished is False
    assert parse_sse(out)[-1][1]["choices"][0]["delta"] == {"content": ", world — ☀️"}


def test_stream_error():
    translator, out = translate("stream_error")
    assert parse_sse(out)[-1] == (
        None,
        {
            "error": {
                "message": "The model is overloaded. Please try again later.",
                "type": "UNAVAILABLE",
                "param": None,
                "code": "503",
            }
        },
    )
    assert translator.finished is True and translator.error["code"] == 503
    assert b"[DONE]" not in out


def test_stream_multiple_candidates_close_finishes_the_others():
    lines = [
        {
            "candidates": [
                {"content": {"parts": [{"text": "A"}], "role": "model"}, "index": 0},
                {"content": {"parts": [{"text": "B"}], "role": "model"}, "index": 1},
            ],
            "responseId": "r1",
        },
        {
            "candidates": [
                {"content": {"parts": [{"text": "!"}], "role": "model"}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4},
            "responseId": "r1",
        },
    ]
    data = b"".join(b"data: " + orjson.dumps(line) + b"\r\n\r\n" for line in lines)
    translator = GeminiStreamTranslator(model="m", include_usage=True, created=CREATED)
    events = [e for _, e in parse_sse(feed_all(translator, data))]
    finishes = [
        (c["index"], c["finish_reason"])
        for e in events
        if e != "[DONE]"
        for c in e["choices"]
        if c["finish_reason"]
    ]
    assert finishes == [(0, "stop"), (1, "stop")]
    assert events[-2]["usage"]["total_tokens"] == 7
    assert events[-1] == "[DONE]"


def test_stream_prompt_blocked():
    payload = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5}}
    data = b"data: " + orjson.dumps(payload) + b"\r\n\r\n"
    translator = GeminiStreamTranslator(model="m", include_usage=False, created=CREATED)
    events = parse_sse(feed_all(translator, data))
    assert events[-2][1]["choices"][0]["finish_reason"] == "content_filter"
    assert events[-1] == (None, "[DONE]")
    assert translator.finished is True


# --------------------------------------------------------------------------- request details


def test_stream_url_and_headers():
    request = ADAPTER.chat_request({"messages": [user()]}, TARGET, stream=True)
    assert request.url == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert request.headers["x-goog-api-key"] == "AIza-test"
    body = orjson.loads(request.body)
    assert body["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 1024}}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"functionCallingConfig": {"mode": "AUTO"}}),
        ("required", {"functionCallingConfig": {"mode": "ANY"}}),
        ("none", {"functionCallingConfig": {"mode": "NONE"}}),
        (
            {"type": "function", "function": {"name": "f"}},
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
        ),
        (None, None),
    ],
)
def test_tool_choice(choice, expected):
    body = {"messages": [user()], "tools": [{"type": "function", "function": {"name": "f"}}]}
    if choice is not None:
        body["tool_choice"] = choice
    out = openai_to_gemini(body)
    assert out.get("toolConfig") == expected
    assert out["tools"] == [{"functionDeclarations": [{"name": "f"}]}]


def test_json_object_response_format():
    out = openai_to_gemini({"messages": [user()], "response_format": {"type": "json_object"}})
    assert out["generationConfig"] == {"responseMimeType": "application/json"}


def test_thought_signature_sentinel_only_on_first_call_without_signature():
    calls = [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": "not json"}},
    ]
    body = {"messages": [user(), {"role": "assistant", "content": None, "tool_calls": calls}]}
    parts = openai_to_gemini(body)["contents"][1]["parts"]
    assert parts == [
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": SIGNATURE_SENTINEL},
        {"functionCall": {"name": "g", "args": {}}},
    ]


def test_function_response_name_fallbacks():
    body = {
        "messages": [user(), {"role": "tool", "tool_call_id": "unknown", "name": "legacy", "content": "ok"}]
    }
    assert openai_to_gemini(body)["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "hi"},
                {"functionResponse": {"name": "legacy", "response": {"content": "ok"}}},
            ],
        }
    ]


def test_schema_refs_allof_and_recursion():
    schema = {
        "type": "object",
        "properties": {
            "node": {"$ref": "#/definitions/Node"},
            "mixed": {
                "allOf": [
                    {"properties": {"a": {"type": "string"}}, "required": ["a"]},
                    {"properties": {"b": {"oneOf": [{"type": "integer"}, {"type": "string"}]}}},
                ]
            },
        },
        "definitions": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/definitions/Node"}}}},
    }
    cleaned = gemini_schema(schema)
    assert cleaned["properties"]["mixed"] == {
        "properties": {"a": {"type": "string"}, "b": {"anyOf": [{"type": "integer"}, {"type": "string"}]}},
        "required": ["a"],
    }
    depth, node = 0, cleaned["properties"]["node"]
    while "properties" in node:
        node, depth = node["properties"]["child"], depth + 1
    assert node == {"type": "object"} and depth == 8
    assert "definitions" not in json.dumps(cleaned) and "$ref" not in json.dumps(cleaned)


# --------------------------------------------------------------------------- response details


@pytest.mark.parametrize(
    ("reason", "has_calls", "expected"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "stop"),
    ],
)
def test_finish_reasons(reason, has_calls, expected):
    parts = [{"functionCall": {"name": "f", "args": {}}}] if has_calls else [{"text": "x"}]
    payload = {"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": reason}]}
    result, _ = gemini_to_openai(payload, model="m", created=CREATED)
    assert result["choices"][0]["finish_reason"] == expected


def test_prompt_blocked_response():
    payload = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 9},
    }
    result, usage = ADAPTER.chat_response(payload, model="m")
    assert result["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "content_filter"}
    ]
    assert usage == Usage(prompt_tokens=9)


def test_classify_error_uses_base_rules():
    body = (
        b'{"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}}'
    )
    error = ADAPTER.classify_error(429, body)
    assert error.retryable and not error.disable and error.message == "Resource has been exhausted"
    assert ADAPTER.classify_error(403, b'{"error": {"code": 403, "message": "API key not valid"}}').disable


def test_reasoning_effort_asks_for_thoughts():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low"}
    config = openai_to_gemini(body)["generationConfig"]
    assert config["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 1024}
    assert "thinkingConfig" not in openai_to_gemini({**body, "reasoning_effort": None}).get(
        "generationConfig", {}
    )
