"""Inbound OpenAI Responses protocol on top of chat upstreams: pure translation, judged by
the official openai SDK's types (strict pydantic validation of every event and of the
final Response) and by its own stream accumulator."""

from __future__ import annotations

import typing

import orjson
import pytest
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter

from providers.base import ChainedStream
from providers.formats.openai_responses import (
    ChatStreamToResponses,
    RequestError,
    ToolName,
    chat_to_response,
    conversation_after,
    failed_event,
    flat_name,
    normalize_input,
    output_text,
    response_object,
    responses_to_chat,
    responses_usage,
    wants_summary,
)
from providers.openai.adapter import OpenAIStreamTranslator
from tests.providers.golden import parse_sse

MODEL = "gpt-test"
_UNION = typing.get_args(typing.get_args(ResponseStreamEvent)[0])
EVENT_TYPES = {typing.get_args(cls.model_fields["type"].annotation)[0]: cls for cls in _UNION}
ITEMS = TypeAdapter(ResponseItem)

CODEX_TOOLS = [
    {
        "type": "function",
        "name": "exec_command",
        "description": "Runs a command.",
        "strict": False,
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
    },
    {
        "type": "namespace",
        "name": "mcp__files__",
        "description": "A file server.",
        "tools": [
            {"type": "function", "name": "read", "parameters": {"type": "object", "properties": {}}},
            {"type": "custom", "name": "patch", "description": "Apply a patch."},
        ],
    },
    {
        "type": "namespace",
        "name": "collaboration",
        "description": "Agents.",
        "tools": [{"type": "function", "name": "spawn_agent"}],
    },
    {"type": "web_search"},
    {"type": "mcp", "server_label": "x", "server_url": "http://example.invalid"},
    {"type": "web_search"},
]


# --------------------------------------------------------------------------- helpers


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
    data: dict = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up",
        "choices": [],
    }
    if delta is not None or finish:
        data["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    if usage is not None:
        data["usage"] = usage
    return b"data: " + orjson.dumps(data) + b"\n\n"


USAGE = {
    "prompt_tokens": 20,
    "completion_tokens": 7,
    "total_tokens": 27,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 3},
}
DONE = b"data: [DONE]\n\n"


def translator(body: dict | None = None, **kwargs) -> ChatStreamToResponses:
    body = body or {"model": MODEL, "input": "hi"}
    plan = responses_to_chat(body)
    base = response_object(body, response_id="resp_test", model=MODEL)
    return ChatStreamToResponses(response=base, tools=plan.tools, summary=wants_summary(body), **kwargs)


def run(stream: ChatStreamToResponses, data: bytes, *, step: int | None = None) -> list[dict]:
    """Feed ``data`` (whole or in ``step``-byte pieces), close, and check every event with
    the SDK's own type; returns the event payloads."""
    out = []
    if step is None:
        out.append(stream.feed(data))
    else:
        out.extend(stream.feed(data[i : i + step]) for i in range(0, len(data), step))
    out.append(stream.close())
    raw = b"".join(out)
    assert b"[DONE]" not in raw
    events = []
    for name, payload in parse_sse(raw):
        assert name == payload["type"]
        EVENT_TYPES[payload["type"]].model_validate(payload)  # strict: every required field, right types
        events.append(payload)
    numbers = [event["sequence_number"] for event in events]
    assert numbers == sorted(set(numbers)), "sequence numbers must strictly increase"
    return events


def accumulate(events: list[dict]):
    """The SDK's responses.stream() accumulator over our events -> its final Response."""
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    for payload in events:
        state.handle_event(EVENT_TYPES[payload["type"]].model_validate(payload))
    return state._completed_response


def kinds(events: list[dict]) -> list[str]:
    return [event["type"].removeprefix("response.") for event in events]


# --------------------------------------------------------------------------- request


def test_string_input_and_instructions():
    plan = responses_to_chat(
        {
            "model": MODEL,
            "input": "hello",
            "instructions": "be brief",
            "max_output_tokens": 50,
            "temperature": 0.2,
        }
    )
    assert plan.chat == {
        "model": MODEL,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        "max_tokens": 50,
        "temperature": 0.2,
    }
    assert plan.messages == [{"role": "user", "content": "hello"}]  # the history kept: no instructions
    (item,) = plan.input_items
    assert item["type"] == "message" and item["id"].startswith("msg_")
    assert item["content"] == [{"type": "input_text", "text": "hello"}]
    ITEMS.validate_python(item)


def test_items_become_messages():
    body = {
        "model": MODEL,
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "dev rules"}],
            },
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "high"},
                    {
                        "type": "input_file",
                        "filename": "a.pdf",
                        "file_data": "data:application/pdf;base64,JVBE",
                    },
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "calling", "annotations": []}]},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "exec_command",
                "arguments": '{"cmd":"ls"}',
            },
            {
                "type": "function_call",
                "call_id": "call_2",
                "name": "read",
                "namespace": "mcp__files__",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
            {
                "type": "function_call_output",
                "call_id": "call_2",
                "output": [
                    {"type": "input_text", "text": "contents"},
                    {"type": "input_image", "image_url": "https://example.invalid/i.png"},
                ],
            },
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"role": "user", "content": "thanks"},
        ],
    }
    messages = responses_to_chat(body).chat["messages"]
    assert messages == [
        {"role": "system", "content": "dev rules"},
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}},
                {
                    "type": "file",
                    "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "mcp__files__read", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"},
        {"role": "tool", "tool_call_id": "call_2", "content": "contents"},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://example.invalid/i.png"}}],
        },
        {"role": "user", "content": "thanks"},
    ]


def test_input_items_get_ids_and_validate_as_sdk_items():
    items = normalize_input(
        [
            {"role": "assistant", "content": "before"},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "ok"},
            {"role": "user", "content": [{"type": "input_text", "text": "x"}], "id": "msg_mine"},
        ]
    )
    assert [item["id"][:3] for item in items] == ["msg", "fc_", "fco", "msg"] and items[3]["id"] == "msg_mine"
    assert items[0]["content"] == [{"type": "output_text", "text": "before", "annotations": []}]
    for item in items:
        ITEMS.validate_python(item)


def test_tools_flat_namespace_custom_and_builtins():
    plan = responses_to_chat(
        {
            "model": MODEL,
            "input": "x",
            "tools": CODEX_TOOLS,
            "tool_choice": "auto",
            "parallel_tool_calls": True,
        }
    )
    names = [tool["function"]["name"] for tool in plan.chat["tools"]]
    assert names == ["exec_command", "mcp__files__read", "mcp__files__patch", "collaboration__spawn_agent"]
    assert plan.chat["tools"][0] == {
        "type": "function",
        "function": {
            "name": "exec_command",
            "description": "Runs a command.",
            "parameters": CODEX_TOOLS[0]["parameters"],
            "strict": False,
        },
    }
    patch = plan.chat["tools"][2]["function"]
    assert patch["parameters"]["required"] == ["input"] and patch["description"] == "Apply a patch."
    assert plan.tools["mcp__files__read"] == ToolName("read", "mcp__files__")
    assert plan.tools["mcp__files__patch"] == ToolName("patch", "mcp__files__", custom=True)
    assert plan.tools["collaboration__spawn_agent"] == ToolName("spawn_agent", "collaboration")
    assert plan.dropped_tools == ["web_search", "mcp"]
    assert plan.chat["tool_choice"] == "auto" and plan.chat["parallel_tool_calls"] is True


def test_only_builtin_tools_send_no_tools_at_all():
    plan = responses_to_chat(
        {
            "model": MODEL,
            "input": "x",
            "tools": [{"type": "file_search"}],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        }
    )
    assert (
        "tools" not in plan.chat and "tool_choice" not in plan.chat and "parallel_tool_calls" not in plan.chat
    )
    assert plan.dropped_tools == ["file_search"]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("none", "none"),
        ("required", "required"),
        (
            {"type": "function", "name": "exec_command"},
            {"type": "function", "function": {"name": "exec_command"}},
        ),
        (
            {"type": "function", "name": "read"},
            {"type": "function", "function": {"name": "mcp__files__read"}},
        ),
        ({"type": "allowed_tools", "mode": "required", "tools": []}, "required"),
        ({"type": "web_search"}, None),
    ],
)
def test_tool_choice(choice, expected):
    chat = responses_to_chat({"model": MODEL, "input": "x", "tools": CODEX_TOOLS, "tool_choice": choice}).chat
    assert chat.get("tool_choice") == expected


def test_flat_names_are_valid_chat_function_names():
    assert flat_name(None, "f") == "f"
    assert flat_name("mcp__codex_apps__gmail", "_search_emails") == "mcp__codex_apps__gmail_search_emails"
    long = flat_name("n" * 60, "tool.with.dots")
    assert len(long) == 64 and all(c.isalnum() or c in "_-" for c in long)
    assert long != flat_name("n" * 60, "tool.with.other")


def test_text_format_and_reasoning():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = {
        "model": MODEL,
        "input": "x",
        "text": {"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}},
        "reasoning": {"effort": "high", "summary": "auto"},
    }
    chat = responses_to_chat(body).chat
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }
    assert "reasoning_effort" not in chat  # not a reasoning model: never sent
    assert responses_to_chat(body, reasoning=True).chat["reasoning_effort"] == "high"
    assert wants_summary(body) and not wants_summary({"reasoning": {"effort": "low"}})
    json_object = {"model": MODEL, "input": "x", "text": {"format": {"type": "json_object"}}}
    assert responses_to_chat(json_object).chat["response_format"] == {"type": "json_object"}
    plain = {"model": MODEL, "input": "x", "text": {"format": {"type": "text"}, "verbosity": "low"}}
    assert "response_format" not in responses_to_chat(plain).chat


def test_codex_fields_are_ignored_not_refused():
    body = {
        "model": MODEL,
        "input": "x",
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "abc",
        "client_metadata": {"x": "y"},
        "metadata": {"a": "b"},
        "truncation": "auto",
        "service_tier": "auto",
        "user": "u1",
        "some_future_field": 1,
    }
    chat = responses_to_chat(body).chat
    assert set(chat) == {"model", "messages", "stream", "stream_options", "user"}
    assert chat["stream_options"] == {"include_usage": True} and chat["user"] == "u1"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"input": [{"type": "message", "role": "robot", "content": "x"}]}, "input[0].role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
            "input[0].content[0]",
        ),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
        ({"tools": [{"type": "function"}]}, "tools[0].name"),
    ],
)
def test_refusals(body, param):
    with pytest.raises(RequestError) as refused:
        responses_to_chat({"model": MODEL, "input": "x", **body})
    assert refused.value.param == param


def test_history_goes_after_the_new_instructions():
    history = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "one"}]
    plan = responses_to_chat({"model": MODEL, "input": "second", "instructions": "new"}, history=history)
    assert plan.chat["messages"] == [
        {"role": "system", "content": "new"},
        *history,
        {"role": "user", "content": "second"},
    ]
    assert plan.messages == [*history, {"role": "user", "content": "second"}]


# --------------------------------------------------------------------------- response


def chat_answer(message: dict, finish: str = "stop", usage: dict | None = USAGE) -> dict:
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
    }
    if usage is not None:
        answer["usage"] = usage
    return answer


def test_chat_to_response_text_and_usage():
    body = {"model": MODEL, "input": "x", "instructions": "be brief", "metadata": {"k": "v"}, "store": False}
    base = response_object(body, response_id="resp_1", model=MODEL, created_at=1700000000)
    response = chat_to_response(chat_answer({"content": "Hello"}), response=base, tools={})
    parsed = Response.model_validate(response)
    assert parsed.output_text == "Hello" and parsed.status == "completed" and parsed.id == "resp_1"
    assert parsed.instructions == "be brief" and parsed.metadata == {"k": "v"} and parsed.store is False
    assert response["output"][0]["content"] == [
        {"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}
    ]
    assert response["usage"] == {
        "input_tokens": 20,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 27,
    }
    assert base["status"] == "in_progress" and base["output"] == []  # the base is not changed


def test_chat_to_response_tool_calls_map_back_to_the_clients_names():
    plan = responses_to_chat({"model": MODEL, "input": "x", "tools": CODEX_TOOLS})
    message = {
        "content": None,
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "mcp__files__read", "arguments": '{"p": 1}'},
            },
            {
                "id": "call_b",
                "type": "function",
                "function": {"name": "mcp__files__patch", "arguments": '{"input": "*** Begin"}'},
            },
            {
                "id": "call_c",
                "type": "function",
                "function": {"name": "exec_command", "arguments": '{"cmd": "ls"}'},
            },
        ],
    }
    base = response_object({}, response_id="resp_1", model=MODEL)
    response = chat_to_response(chat_answer(message, "tool_calls"), response=base, tools=plan.tools)
    Response.model_validate(response)
    read, patch, command = response["output"]
    assert (read["type"], read["name"], read["namespace"], read["call_id"]) == (
        "function_call",
        "read",
        "mcp__files__",
        "call_a",
    )
    assert (patch["type"], patch["name"], patch["input"]) == ("custom_tool_call", "patch", "*** Begin")
    assert (command["name"], command["arguments"], "namespace" in command) == (
        "exec_command",
        '{"cmd": "ls"}',
        False,
    )
    # and they go back upstream under the same chat names
    follow = conversation_after([{"role": "user", "content": "x"}], response)
    assert [call["function"]["name"] for call in follow[-1]["tool_calls"]] == [
        "mcp__files__read",
        "mcp__files__patch",
        "exec_command",
    ]
    assert orjson.loads(follow[-1]["tool_calls"][1]["function"]["arguments"]) == {"input": "*** Begin"}


@pytest.mark.parametrize("summary", [True, False])
def test_chat_to_response_reasoning(summary):
    base = response_object({}, response_id="resp_1", model=MODEL)
    answer = chat_answer({"content": "42", "reasoning_content": "thinking hard"})
    response = chat_to_response(answer, response=base, tools={}, summary=summary)
    Response.model_validate(response)
    reasoning = response["output"][0]
    assert reasoning["type"] == "reasoning"
    assert reasoning["summary"] == ([{"type": "summary_text", "text": "thinking hard"}] if summary else [])
    assert output_text(response) == "42"  # reasoning is never answer text


def test_length_is_incomplete():
    base = response_object({}, response_id="resp_1", model=MODEL)
    response = chat_to_response(chat_answer({"content": "cut"}, "length"), response=base, tools={})
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    Response.model_validate(response)


def test_missing_usage_is_left_for_the_caller():
    base = response_object({}, response_id="resp_1", model=MODEL)
    response = chat_to_response(chat_answer({"content": "x"}, usage=None), response=base, tools={})
    assert response["usage"] is None
    assert responses_usage(None, input_tokens=3, output_tokens=2)["total_tokens"] == 5


# --------------------------------------------------------------------------- stream


TEXT = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hello"}),
    chunk({"content": " there"}),
]


def test_stream_text_events_in_order():
    done = []
    stream = translator(on_done=done.append)
    events = run(stream, b"".join([*TEXT, chunk(finish="stop"), chunk(usage=USAGE), DONE]))
    assert kinds(events) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    assert events[0]["sequence_number"] == 0
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hello there"
    final = events[-1]["response"]
    assert (
        final["status"] == "completed" and final["usage"]["output_tokens"] == 7 and final["id"] == "resp_test"
    )
    assert stream.finished and not stream.error and done == [final]
    sdk = accumulate(events)
    assert sdk.output_text == "Hello there" and sdk.usage.total_tokens == 27


def test_stream_split_anywhere_gives_the_same_events():
    data = b"".join([*TEXT, chunk(finish="stop"), chunk(usage=USAGE), DONE])
    whole = run(translator(), data)
    split = run(translator(), data, step=1)

    def shape(events):
        return [(e["type"], e.get("delta"), e["sequence_number"]) for e in events]

    assert shape(split) == shape(whole)


def test_stream_interleaved_tool_calls_land_in_their_items():
    body = {"model": MODEL, "input": "x", "tools": CODEX_TOOLS}
    data = b"".join(
        [
            chunk({"role": "assistant", "content": "Let me check."}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "exec_command", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "mcp__files__read", "arguments": '{"p"'},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"cmd": '}}]}),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": ": 2}"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"ls"}'}}]}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 2,
                            "id": "call_c",
                            "type": "function",
                            "function": {"name": "mcp__files__patch", "arguments": '{"input": "diff"}'},
                        }
                    ]
                }
            ),
            chunk(finish="tool_calls"),
            chunk(usage=USAGE),
            DONE,
        ]
    )
    events = run(translator(body), data)
    sdk = accumulate(events)
    message, first, second, custom = sdk.output
    assert message.type == "message" and message.content[0].text == "Let me check."
    assert (first.name, first.call_id, first.arguments) == ("exec_command", "call_a", '{"cmd": "ls"}')
    assert (second.name, second.namespace, second.arguments) == ("read", "mcp__files__", '{"p": 2}')
    assert (custom.type, custom.name, custom.input) == ("custom_tool_call", "patch", "diff")
    deltas: dict[int, str] = {}
    for event in events:
        if event["type"] == "response.function_call_arguments.delta":
            deltas[event["output_index"]] = deltas.get(event["output_index"], "") + event["delta"]
    assert deltas == {1: '{"cmd": "ls"}', 2: '{"p": 2}'}
    # the message is done before the first call is added (items complete in order)
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert added == [0, 1, 2, 3]
    assert kinds(events).index("output_item.done") < kinds(events).index("output_item.added", 3)


@pytest.mark.parametrize("summary", [True, False])
def test_stream_reasoning(summary):
    body = {
        "model": MODEL,
        "input": "x",
        "reasoning": {"effort": "low", **({"summary": "auto"} if summary else {})},
    }
    data = b"".join(
        [
            chunk({"role": "assistant", "reasoning_content": "Think"}),
            chunk({"reasoning_content": "ing."}),
            chunk({"content": "Answer"}),
            chunk(finish="stop"),
            chunk(usage=USAGE),
        ]
    )
    events = run(translator(body), data)
    names = kinds(events)
    summaries = [e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta"]
    if summary:
        assert summaries == ["Think", "ing."]
        assert names[2:9] == [
            "output_item.added",
            "reasoning_summary_part.added",
            "reasoning_summary_text.delta",
            "reasoning_summary_text.delta",
            "reasoning_summary_text.done",
            "reasoning_summary_part.done",
            "output_item.done",
        ]
    else:
        assert summaries == [] and names[2:4] == ["output_item.added", "output_item.done"]
    sdk = accumulate(events)
    assert sdk.output[0].type == "reasoning" and sdk.output_text == "Answer"
    assert sdk.usage.output_tokens_details.reasoning_tokens == 3


def test_stream_length_is_incomplete():
    events = run(translator(), b"".join([*TEXT, chunk(finish="length"), chunk(usage=USAGE), DONE]))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert (
        sum(e["type"] in ("response.completed", "response.incomplete", "response.failed") for e in events)
        == 1
    )


def test_stream_without_usage_counts_locally():
    stream = translator(input_tokens=11, count_tokens=lambda text: len(text.split()))
    events = run(stream, b"".join([*TEXT, chunk(finish="stop"), DONE]))
    usage = events[-1]["response"]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (11, 2)
    assert stream.usage is None  # the relay bills it as an estimate


def test_stream_upstream_error_is_response_failed():
    error = b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    stream = translator()
    events = run(stream, b"".join([*TEXT, error]))
    assert events[-1]["type"] == "response.failed" and stream.finished
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": "overloaded"}
    assert stream.error == {"message": "overloaded", "type": "server_error"}


def test_stream_cut_ends_with_response_failed_from_the_translator():
    stream = ChainedStream(OpenAIStreamTranslator(model=MODEL, include_usage=True), translator())
    out = stream.feed(b"".join(TEXT)) + stream.close()
    assert not stream.finished  # the relay sees a cut stream
    tail = stream.stream_error("The upstream stream ended before it was complete.")
    events = [payload for _, payload in parse_sse(out + tail)]
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["id"] == "resp_test"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    EVENT_TYPES["response.failed"].model_validate(events[-1])


def test_stream_error_before_anything_still_opens_the_response():
    events = [payload for _, payload in parse_sse(translator().stream_error("gone"))]
    assert kinds(events) == ["created", "in_progress", "failed"]
    accumulate(events)  # the SDK needs response.created first


def test_bare_failed_event_validates():
    ((name, payload),) = parse_sse(failed_event("upstream cut"))
    assert name == "response.failed"
    EVENT_TYPES[name].model_validate(payload)


def test_empty_answer_is_an_empty_message():
    events = run(translator(), b"".join([chunk({"role": "assistant"}), chunk(finish="stop"), DONE]))
    sdk = accumulate(events)
    assert sdk.output[0].type == "message" and sdk.output_text == ""


def test_through_the_openai_chat_translator():
    """The real chain the endpoint builds for OpenAI-type upstreams."""
    stream = ChainedStream(OpenAIStreamTranslator(model=MODEL, include_usage=True), translator())
    events = run(stream, b"".join([*TEXT, chunk(finish="stop"), chunk(usage=USAGE), DONE]), step=7)
    assert stream.finished and stream.usage.completion_tokens == 7
    assert accumulate(events).output_text == "Hello there"
