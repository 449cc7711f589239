"""Inbound Anthropic Messages protocol on top of chat upstreams: golden files + checks."""

from __future__ import annotations

import hashlib
import json

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message

from providers.anthropic.adapter import openai_to_anthropic
from providers.base import ChainedStream, Usage
from providers.formats.anthropic_messages import (
    ChatStreamToMessages,
    anthropic_error,
    anthropic_error_event,
    chat_to_messages,
    messages_to_chat,
)
from providers.openai.adapter import OpenAIStreamTranslator
from tests.providers.golden import check_json, check_sse, feed_all, parse_sse, read_bytes, read_json

MODEL = "claude-sonnet-4-5"
STREAMS = {
    ("stream_tool_calls", ""): {},
    ("stream_reasoning", ""): {},
    ("stream_reasoning", ".thinking"): {"thinking": True},
    ("stream_error", ""): {},
}


def translate(case: str, variant: str = "", *, step: int | None = None, data: bytes | None = None):
    translator = ChatStreamToMessages(model=MODEL, **STREAMS.get((case, variant), {}))
    raw = read_bytes(f"messages/{case}.in.sse") if data is None else data
    return translator, feed_all(translator, raw, step=step)


def sdk_message(out: bytes) -> Message:
    """Accumulate our Anthropic SSE with the official SDK's stream accumulator."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    events = parse_sse(out)
    for name, data in events:
        assert name == data["type"]
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    return snapshot


# --------------------------------------------------------------------------- golden


def test_request_golden():
    check_json(
        "messages/request_claude_code.out.json",
        messages_to_chat(read_json("messages/request_claude_code.in.json")),
    )


def test_response_golden():
    result = chat_to_messages(read_json("messages/response_tool_calls.in.json"), model=MODEL)
    check_json("messages/response_tool_calls.out.json", result)
    Message.model_validate(result)


@pytest.mark.parametrize(("case", "variant"), sorted(STREAMS))
def test_stream_golden(case, variant):
    _, out = translate(case, variant)
    check_sse(f"messages/{case}{variant}.out.sse", out)


@pytest.mark.parametrize(("case", "variant"), sorted(STREAMS))
def test_stream_byte_by_byte_equals_whole(case, variant):
    whole_translator, whole = translate(case, variant)
    split_translator, split = translate(case, variant, step=1)
    assert split == whole
    assert (split_translator.usage, split_translator.finished) == (
        whole_translator.usage,
        whole_translator.finished,
    )


# --------------------------------------------------------------------------- request details


def test_request_keep_cache_control():
    chat = messages_to_chat(read_json("messages/request_claude_code.in.json"), keep_cache_control=True)
    system = chat["messages"][0]
    assert system["role"] == "system"
    assert [p.get("cache_control") for p in system["content"]] == [{"type": "ephemeral"}] * 2
    assert chat["messages"][1]["content"][1]["cache_control"] == {"type": "ephemeral"}
    assert chat["tools"][1]["cache_control"] == {"type": "ephemeral"}


def test_request_round_trip_to_anthropic_keeps_tool_pairs_and_alternation():
    chat = messages_to_chat(read_json("messages/request_claude_code.in.json"), keep_cache_control=True)
    upstream = openai_to_anthropic(chat, model=MODEL, stream=True)
    roles = [m["role"] for m in upstream["messages"]]
    assert all(a != b for a, b in zip(roles, roles[1:], strict=False)) and roles[0] == "user"
    for position, message in enumerate(upstream["messages"]):
        uses = [b["id"] for b in message["content"] if b["type"] == "tool_use"]
        if uses:
            follow = upstream["messages"][position + 1]["content"]
            assert [b["tool_use_id"] for b in follow if b["type"] == "tool_result"] == uses
            kinds = [b["type"] for b in follow]
            assert kinds == sorted(kinds, key=lambda kind: kind != "tool_result")
    assert upstream["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert upstream["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert all(block.get("text") != "" for m in upstream["messages"] for block in m["content"])


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "Read"}, {"type": "function", "function": {"name": "Read"}}),
    ],
)
def test_tool_choice(choice, expected):
    body = {
        "model": MODEL,
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "Read", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": choice,
    }
    chat = messages_to_chat(body)
    assert chat["tool_choice"] == expected
    assert "parallel_tool_calls" not in chat
    assert chat["messages"] == [{"role": "user", "content": "hi"}]
    assert "stream" not in chat and "stream_options" not in chat


def test_request_user_id_is_kept_when_short_and_hashed_when_too_long():
    body = {"model": MODEL, "max_tokens": 5, "messages": [], "metadata": {"user_id": "u-1"}}
    assert messages_to_chat(body)["user"] == "u-1"
    long_id = read_json("messages/request_claude_code.in.json")["metadata"]["user_id"]
    body["metadata"]["user_id"] = long_id
    assert len(long_id) > 64
    assert messages_to_chat(body)["user"] == hashlib.sha256(long_id.encode()).hexdigest()[:64]


def test_request_without_tools_drops_tool_choice():
    body = {
        "model": MODEL,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
        "tool_choice": {"type": "any"},
    }
    assert "tool_choice" not in messages_to_chat(body)


# --------------------------------------------------------------------------- response details


@pytest.mark.parametrize(
    ("finish_reason", "tool_calls", "stop_reason"),
    [
        ("stop", False, "end_turn"),
        ("length", False, "max_tokens"),
        ("tool_calls", True, "tool_use"),
        ("content_filter", False, "refusal"),
        ("stop", True, "tool_use"),  # servers that report "stop" with tool calls
        (None, False, "end_turn"),
    ],
)
def test_stop_reasons(finish_reason, tool_calls, stop_reason):
    message = {"role": "assistant", "content": "x"}
    if tool_calls:
        message["tool_calls"] = [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
        ]
    resp = {"id": "chatcmpl-1", "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}
    result = chat_to_messages(resp, model=MODEL)
    assert result["stop_reason"] == stop_reason
    assert result["stop_sequence"] is None
    assert result["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


def test_response_reasoning_only_with_thinking():
    resp = {
        "id": "x",
        "choices": [
            {
                "message": {"role": "assistant", "content": "4", "reasoning_content": "2+2"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3},
    }
    assert [b["type"] for b in chat_to_messages(resp, model=MODEL)["content"]] == ["text"]
    assert chat_to_messages(resp, model=MODEL, thinking=True)["content"][0] == {
        "type": "thinking",
        "thinking": "2+2",
        "signature": "",
    }
    assert chat_to_messages(resp, model=MODEL)["id"] == "msg_x"


# --------------------------------------------------------------------------- stream semantics


def test_stream_is_accepted_by_anthropic_sdk_accumulator():
    translator, out = translate("stream_tool_calls")
    message = sdk_message(out)
    expected = chat_to_messages(read_json("messages/response_tool_calls.in.json"), model=MODEL)
    assert message.id == expected["id"] == "msg_B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
    assert message.content[0].text == "I'll fix the assertion."
    streamed_tools = [b.to_dict() for b in message.content[1:]]
    assert streamed_tools == [b for b in expected["content"] if b["type"] == "tool_use"]
    assert message.stop_reason == expected["stop_reason"] == "tool_use"
    assert message.usage.input_tokens == 93 and message.usage.cache_read_input_tokens == 1024
    assert message.usage.output_tokens == 46
    assert translator.usage == Usage(prompt_tokens=1117, completion_tokens=46, cached_tokens=1024)
    assert translator.text_parts[0] == "I'll fix " and translator.finished


def test_stream_reasoning_hidden_by_default_but_counted():
    translator, out = translate("stream_reasoning")
    assert b"thinking" not in out
    assert translator.text_parts == ["2 + 2 is 4, ", "not 5.", "The test expects ", "5 — it should be 4."]
    assert translator.usage == Usage(prompt_tokens=40, completion_tokens=52, cached_tokens=32)


def test_chained_stream_keeps_the_text_once():
    # chat chunks -> Anthropic events, as /v1/messages runs over a chat provider: the first
    # translator notes the text (the relay counts and drops it as it comes); the second
    # reads the same text again and must not keep a copy of the whole answer
    chain = ChainedStream(
        OpenAIStreamTranslator(model=MODEL, include_usage=True), ChatStreamToMessages(model=MODEL)
    )
    _, standalone = translate("stream_reasoning")
    out = feed_all(chain, read_bytes("messages/stream_reasoning.in.sse"))
    assert out == standalone and chain.finished
    assert "".join(chain.text_parts) == "The test expects 5 — it should be 4."  # the first's
    assert chain.second.text_parts == [] and chain.second.text_chars > 0


def test_stream_thinking_is_accepted_by_anthropic_sdk_accumulator():
    _, out = translate("stream_reasoning", ".thinking")
    message = sdk_message(out)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "2 + 2 is 4, not 5."
    assert message.content[1].text == "The test expects 5 — it should be 4."
    assert message.usage.input_tokens == 8 and message.usage.cache_read_input_tokens == 32


def test_stream_holds_message_delta_until_usage_chunk():
    data = read_bytes("messages/stream_tool_calls.in.sse")
    usage_line = data.index(b'"choices":[],"usage":{')
    usage_line = data.rindex(b"data: ", 0, usage_line)
    translator = ChatStreamToMessages(model=MODEL)
    before = parse_sse(translator.feed(data[:usage_line]))
    assert before[-1][0] == "content_block_stop"
    assert translator.finished is False
    after = parse_sse(translator.feed(data[usage_line:]) + translator.close())
    assert [name for name, _ in after] == ["message_delta", "message_stop"]
    assert after[0][1]["usage"] == {"input_tokens": 93, "output_tokens": 46, "cache_read_input_tokens": 1024}


def test_stream_done_without_usage():
    chunks = [
        b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}\n\n',
        b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    translator = ChatStreamToMessages(model=MODEL, input_tokens=12)
    events = parse_sse(feed_all(translator, b"".join(chunks)))
    assert events[0][1]["message"]["usage"] == {"input_tokens": 12, "output_tokens": 0}
    assert events[-2] == (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            # no usage from the upstream: the prompt as counted at the start
            "usage": {"input_tokens": 12, "output_tokens": 0},
        },
    )
    assert translator.finished and translator.usage is None


def test_stream_finish_then_clean_end_without_done():
    data = b'data: {"id":"c2","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n'
    translator = ChatStreamToMessages(model=MODEL)
    out = translator.feed(data)
    assert b"message_stop" not in out
    assert parse_sse(translator.close())[-1] == ("message_stop", {"type": "message_stop"})
    assert translator.finished


@pytest.mark.parametrize("cut", [b'"finish_reason":"tool_calls"', b'"arguments":"{\\"command'])
def test_cut_stream_is_not_finished(cut):
    data = read_bytes("messages/stream_tool_calls.in.sse")
    data = data[: data.index(cut)]
    translator = ChatStreamToMessages(model=MODEL)
    out = translator.feed(data)
    assert translator.close() == b""
    assert translator.finished is False
    assert b"message_delta" not in out and b"message_stop" not in out


def test_stream_error_event():
    translator, out = translate("stream_error")
    assert parse_sse(out)[-1] == (
        "error",
        {
            "type": "error",
            "error": {
                "type": "api_error",
                "message": "The server had an error while processing your request. Sorry about that!",
            },
        },
    )
    assert translator.finished and translator.error["type"] == "server_error"


def test_stream_tool_calls_without_index_and_late_name():
    chunks = [
        {
            "id": "g1",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "functions.Read:0",
                                "type": "function",
                                "function": {"name": "Read", "arguments": '{"a": 1}'},
                            }
                        ],
                    },
                }
            ],
        },
        {
            "id": "g1",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "id": "call_2",
                                "type": "function",
                                "function": {"name": "Bash", "arguments": "{}"},
                            }
                        ]
                    },
                }
            ],
        },
        {
            "id": "g1",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [{"index": 2, "id": "call_3", "function": {"arguments": '{"x"'}}]
                    },
                }
            ],
        },
        {
            "id": "g1",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [{"index": 2, "function": {"name": "Grep", "arguments": ": 2}"}}]
                    },
                }
            ],
        },
        {"id": "g1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    data = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    message = sdk_message(feed_all(ChatStreamToMessages(model=MODEL), data))
    assert [(b.id, b.name, b.input) for b in message.content] == [
        ("functions_Read_0", "Read", {"a": 1}),
        ("call_2", "Bash", {}),
        ("call_3", "Grep", {"x": 2}),
    ]
    assert message.stop_reason == "tool_use"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_anthropic_error(status, error_type):
    assert anthropic_error(status, "boom") == {
        "type": "error",
        "error": {"type": error_type, "message": "boom"},
    }


def test_anthropic_error_event():
    assert anthropic_error_event(529, "Overloaded") == (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
