"""AnthropicAdapter: OpenAI chat <-> Anthropic Messages, golden files + targeted checks."""

from __future__ import annotations

import json
import random

import orjson
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from providers.anthropic.adapter import (
    AnthropicAdapter,
    AnthropicStreamTranslator,
    anthropic_to_openai,
    openai_to_anthropic,
)
from providers.base import Target, Usage
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
ADAPTER = AnthropicAdapter()
TARGETS = {
    "request_agent": Target(
        base_url="https://api.anthropic.com/v1", api_key="sk-ant-test", upstream_model="claude-sonnet-4-5"
    ),
    "request_json_prefill": Target(
        base_url="https://api.anthropic.com/v1",
        api_key="sk-ant-test",
        upstream_model="claude-haiku-4-5",
        api_version="2023-01-01",
        extra_headers={"anthropic-beta": "pdfs-2024-09-25"},
        extra_params={"top_k": 5, "metadata": {"user_id": "gateway"}},
    ),
}
STREAMS = {"stream_tool_use": True, "stream_text": False, "stream_error": True}


def request_dict(request) -> dict:
    return {
        "method": request.method,
        "url": request.url,
        "headers": request.headers,
        "body": orjson.loads(request.body),
    }


def translate(case: str, *, step: int | None = None) -> tuple[AnthropicStreamTranslator, bytes]:
    translator = AnthropicStreamTranslator(
        model="claude-sonnet", include_usage=STREAMS[case], created=CREATED
    )
    return translator, feed_all(translator, read_bytes(f"anthropic/{case}.in.sse"), step=step)


# --------------------------------------------------------------------------- golden


@pytest.mark.parametrize("case", sorted(TARGETS))
def test_request_golden(case):
    body = read_json(f"anthropic/{case}.in.json")
    request = ADAPTER.chat_request(body, TARGETS[case], stream=bool(body.get("stream")))
    check_json(f"anthropic/{case}.out.json", request_dict(request))


@pytest.mark.parametrize("case", ["response_tool_use", "response_text"])
def test_response_golden(case):
    result, usage = anthropic_to_openai(
        read_json(f"anthropic/{case}.in.json"), model="claude-sonnet", created=CREATED
    )
    check_json(f"anthropic/{case}.out.json", {"response": result, "usage": usage_fields(usage)})
    ChatCompletion.model_validate(result)


@pytest.mark.parametrize("case", sorted(STREAMS))
def test_stream_golden(case):
    _, out = translate(case)
    check_sse(f"anthropic/{case}.out.sse", out)


@pytest.mark.parametrize("case", sorted(STREAMS))
def test_stream_byte_by_byte_equals_whole(case):
    whole_translator, whole = translate(case)
    split_translator, split = translate(case, step=1)
    assert split == whole
    assert split_translator.usage == whole_translator.usage
    assert split_translator.finished == whole_translator.finished
    assert split_translator.text_parts == whole_translator.text_parts


@pytest.mark.parametrize("seed", range(20))
def test_stream_random_splits(seed):
    data = read_bytes("anthropic/stream_tool_use.in.sse")
    cuts = sorted(random.Random(seed).sample(range(1, len(data)), 40))
    translator = AnthropicStreamTranslator(model="claude-sonnet", include_usage=True, created=CREATED)
    assert feed_split_at(translator, data, cuts) == translate("stream_tool_use")[1]


def test_stream_crlf_line_endings():
    data = read_bytes("anthropic/stream_text.in.sse").replace(b"\n", b"\r\n")
    translator = AnthropicStreamTranslator(model="claude-sonnet", include_usage=False, created=CREATED)
    assert feed_all(translator, data, step=7) == translate("stream_text")[1]


# --------------------------------------------------------------------------- stream semantics


def test_stream_usage_text_and_finish():
    translator, out = translate("stream_tool_use")
    assert translator.finished is True
    assert translator.usage == Usage(prompt_tokens=472 + 1024, completion_tokens=89, cached_tokens=1024)
    assert translator.text_parts == [
        "Two cities, so two ",
        "weather calls.",
        "Let me check ",
        "both cities — ☀️?",
        '{"location": "Par',
        'is, France"}',
        '{"location": "Tokyo, Japan"}',
    ]
    assert translator.text_chars == sum(len(p) for p in translator.text_parts)
    events = parse_sse(out)
    assert events[-1] == (None, "[DONE]")
    chunks = [data for _, data in events[:-1]]
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {
        ("chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U", CREATED, "claude-sonnet")
    }
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 1024
    }


def test_stream_is_accepted_by_openai_sdk_accumulator():
    _, out = translate("stream_tool_use")
    state = ChatCompletionStreamState()
    for _, data in parse_sse(out)[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(data))
    final = state.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check both cities — ☀️?"
    calls = [(c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls]
    assert calls == [
        ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", {"location": "Paris, France"}),
        ("toolu_01V3y3hL56sCom4vPVtP9Wr8", "get_weather", {"location": "Tokyo, Japan"}),
    ]
    assert final.usage.prompt_tokens == 1496 and final.usage.completion_tokens == 89


def test_stream_without_include_usage_has_no_usage_chunk_but_counts_usage():
    translator, out = translate("stream_text")
    assert all(data == "[DONE]" or "usage" not in data for _, data in parse_sse(out))
    assert translator.usage == Usage(prompt_tokens=25, completion_tokens=15)
    assert translator.text_parts == ["Hello", "!"]


@pytest.mark.parametrize("marker", [b"event: message_stop", b"event: message_delta", b'"partial_json":"is'])
def test_cut_stream_is_not_finished(marker):
    data = read_bytes("anthropic/stream_tool_use.in.sse")
    data = data[: data.index(marker)]
    translator = AnthropicStreamTranslator(model="claude-sonnet", include_usage=True, created=CREATED)
    out = translator.feed(data)
    assert translator.close() == b""
    assert translator.finished is False
    assert b"[DONE]" not in out and b'"usage"' not in out


def test_stream_error_event():
    translator, out = translate("stream_error")
    events = parse_sse(out)
    assert events[-1] == (
        None,
        {"error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}},
    )
    assert b"[DONE]" not in out
    assert translator.finished is True
    assert translator.error == {"type": "overloaded_error", "message": "Overloaded"}
    assert translator.feed(b'event: message_stop\ndata: {"type":"message_stop"}\n\n') == b""


def test_stream_ignores_unknown_events_and_garbage():
    translator = AnthropicStreamTranslator(model="m", include_usage=False, created=CREATED)
    out = translator.feed(
        b': comment\n\nevent: future_event\ndata: {"type":"future_event"}\n\ndata: {oops\n\n'
    )
    assert out == b""
    assert translator.finished is False


# --------------------------------------------------------------------------- request details


def body_for(**extra) -> dict:
    return {"model": "x", "messages": [{"role": "user", "content": "hi"}], **extra}


def test_request_defaults():
    target = TARGETS["request_agent"]
    request = ADAPTER.chat_request(body_for(), target, stream=False)
    assert request.url == "https://api.anthropic.com/v1/messages"
    assert request.headers == {
        "content-type": "application/json",
        "x-api-key": "sk-ant-test",
        "anthropic-version": "2023-06-01",
    }
    assert orjson.loads(request.body) == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 4096,
    }


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (None, True, None),
    ],
)
def test_tool_choice(choice, parallel, expected):
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    ]
    extra = {"tools": tools}
    if choice is not None:
        extra["tool_choice"] = choice
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    assert openai_to_anthropic(body_for(**extra), model="m").get("tool_choice") == expected


def test_tool_choice_without_tools_is_dropped():
    assert "tool_choice" not in openai_to_anthropic(body_for(tool_choice="required"), model="m")


def test_tool_history_without_tools_gets_placeholder_declarations():
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    body = {
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "found"},
            {"role": "user", "content": "Summarise the conversation."},
        ]
    }
    out = openai_to_anthropic(body, model="m")
    assert [tool["name"] for tool in out["tools"]] == ["lookup"]
    assert out["tool_choice"] == {"type": "none"}
    assert "tools" not in openai_to_anthropic(body_for(), model="m")


def test_json_object_response_format_instruction():
    body = body_for(response_format={"type": "json_object"})
    assert openai_to_anthropic(body, model="m")["system"].startswith(
        "Respond only with a single valid JSON object"
    )


def test_invalid_tool_arguments_become_empty_input():
    body = {
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{not json"}},
                    {"id": "b", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}},
                ],
            },
        ]
    }
    blocks = openai_to_anthropic(body, model="m")["messages"][1]["content"]
    assert [b["input"] for b in blocks] == [{}, {}]


def test_never_emits_empty_messages_or_text_blocks():
    body = {
        "messages": [
            {"role": "user", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "real"}]},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": "next"},
            {"role": "assistant", "content": "   "},
        ]
    }
    assert openai_to_anthropic(body, model="m")["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "real"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "answer"}]},
        {"role": "user", "content": [{"type": "text", "text": "next"}]},
    ]


# --------------------------------------------------------------------------- response details


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_stop_reasons(stop_reason, finish_reason):
    payload = {
        "id": "msg_1",
        "content": [{"type": "text", "text": "x"}],
        "stop_reason": stop_reason,
        "usage": {},
    }
    result, _ = anthropic_to_openai(payload, model="m", created=CREATED)
    assert result["choices"][0]["finish_reason"] == finish_reason


@pytest.mark.parametrize("stop_reason", ["end_turn", "max_tokens", "tool_use", "refusal"])
def test_stream_stop_reasons_match_non_stream(stop_reason):
    data = read_bytes("anthropic/stream_text.in.sse").replace(b'"end_turn"', f'"{stop_reason}"'.encode())
    translator = AnthropicStreamTranslator(model="m", include_usage=False, created=CREATED)
    events = parse_sse(feed_all(translator, data))
    expected, _ = anthropic_to_openai({"stop_reason": stop_reason, "content": []}, model="m", created=CREATED)
    assert events[-2][1]["choices"][0]["finish_reason"] == expected["choices"][0]["finish_reason"]


def test_response_only_tool_calls_has_null_content():
    payload = {
        "id": "msg_2",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }
    result, usage = ADAPTER.chat_response(payload, model="m")
    assert result["choices"][0]["message"]["content"] is None
    assert result["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert isinstance(result["created"], int)
    assert usage == Usage(prompt_tokens=3, completion_tokens=4)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "body", "retryable", "disable", "error_type"),
    [
        (
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            True,
            False,
            "upstream_error",
        ),
        (
            429,
            {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limited"}},
            True,
            False,
            "upstream_error",
        ),
        (
            500,
            {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}},
            True,
            False,
            "upstream_error",
        ),
        (
            401,
            {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
            True,
            True,
            "upstream_auth_error",
        ),
        (
            403,
            {"type": "error", "error": {"type": "permission_error", "message": "no access"}},
            True,
            True,
            "upstream_auth_error",
        ),
        (
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "Your credit balance is too low to access the Anthropic API.",
                },
            },
            True,
            True,
            "upstream_balance_error",
        ),
        (
            400,
            {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: required"}},
            False,
            False,
            "invalid_request_error",
        ),
    ],
)
def test_classify_error(status, body, retryable, disable, error_type):
    error = ADAPTER.classify_error(status, orjson.dumps(body))
    assert (error.status, error.retryable, error.disable, error.type) == (
        status,
        retryable,
        disable,
        error_type,
    )
    assert error.message == body["error"]["message"]


def test_classify_error_non_json_body():
    error = ADAPTER.classify_error(529, b"<html>overloaded</html>")
    assert error.retryable and not error.disable
