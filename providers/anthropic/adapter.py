"""Anthropic Messages API upstream (``POST {base_url}/messages``).

Clients speak OpenAI chat-completions; this module translates requests, responses and
streams to and from the Anthropic Messages protocol.

Translation notes (best effort where the protocols differ):

* ``system``/``developer`` messages anywhere in the conversation become the top-level
  ``system`` (joined with a blank line; a list of text blocks when a part carries
  ``cache_control``, which is passed through so OpenRouter-style prompt caching works).
* Consecutive messages with the same role are merged (Anthropic requires alternation);
  ``tool`` messages become ``tool_result`` blocks in a user message, placed before any
  text in that message as the API requires. Empty text is never sent.
* Tool call ids are sanitised to ``[A-Za-z0-9_-]`` (Anthropic rejects other characters);
  the matching ``tool_result`` ids are sanitised the same way so pairs still match.
* ``temperature`` is clamped to Anthropic's 0..1 range; ``n``, ``seed``, penalties and
  ``logprobs`` have no equivalent and are dropped.
* ``response_format`` json_object/json_schema has no native equivalent: an instruction
  to answer with (schema-conforming) JSON only is appended to ``system``.
* A history with tool calls but no ``tools`` in the request (valid for OpenAI, rejected
  by Anthropic) gets placeholder declarations for the tools it used and ``tool_choice:
  none``.
* A trailing assistant message (prefill) has its trailing whitespace stripped, which the
  API otherwise rejects.
* Responses: ``thinking`` blocks become the non-standard ``message.reasoning_content``;
  ``redacted_thinking`` and server-tool blocks are dropped.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from providers.base import (
    SSE_DONE,
    Adapter,
    Capability,
    StreamTranslator,
    Target,
    UpstreamError,
    UpstreamModel,
    UpstreamRequest,
    Usage,
    error_message,
    listed_models,
    sse,
)
from providers.formats.anthropic_messages import tool_id, usage_from_anthropic
from providers.formats.openai_chat import (
    ChatChunkWriter,
    Turns,
    completion_id,
    conversation,
    function_tools,
    merge_params,
    parse_arguments,
    parse_data_url,
    put,
    stop_list,
    usage_dict,
)

DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
# what /v1/messages/count_tokens accepts (anything else in a messages body is refused there)
COUNT_TOKENS_FIELDS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers", "context_management"}
)

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

JSON_OBJECT_INSTRUCTION = (
    "Respond only with a single valid JSON object, without any surrounding text or markdown."
)
JSON_SCHEMA_INSTRUCTION = (
    "Respond only with a single valid JSON object, without any surrounding text or markdown, "
    "that conforms to this JSON schema:\n"
)


# --------------------------------------------------------------------------- helpers


def _image_block(url: str) -> dict:
    parsed = parse_data_url(url)
    if parsed:
        mime, data = parsed
        return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _with_cache_control(block: dict, part: dict) -> dict:
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _content_blocks(content: Any) -> list[dict]:
    """OpenAI user/assistant/tool content -> Anthropic text/image blocks (no empty text)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict] = []
    if not isinstance(content, list):
        return [{"type": "text", "text": str(content)}]
    for part in content:
        if isinstance(part, str):
            if part:
                blocks.append({"type": "text", "text": part})
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text", None) and isinstance(part.get("text"), str):
            if part["text"]:
                blocks.append(_with_cache_control({"type": "text", "text": part["text"]}, part))
        elif kind == "refusal" and part.get("refusal"):
            blocks.append({"type": "text", "text": str(part["refusal"])})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str) and url:
                blocks.append(_with_cache_control(_image_block(url), part))
        elif kind == "file" and isinstance(part.get("file"), dict):
            data = part["file"].get("file_data")
            parsed = parse_data_url(data) if isinstance(data, str) else None
            if parsed and parsed[0] == "application/pdf":
                source = {"type": "base64", "media_type": parsed[0], "data": parsed[1]}
                blocks.append(_with_cache_control({"type": "document", "source": source}, part))
    return blocks


# --------------------------------------------------------------------------- request


def _system_blocks(body: dict) -> list[dict]:
    blocks: list[dict] = []
    for message in body.get("messages") or ():
        if isinstance(message, dict) and message.get("role") in ("system", "developer"):
            blocks.extend(b for b in _content_blocks(message.get("content")) if b["type"] == "text")
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_object":
            blocks.append({"type": "text", "text": JSON_OBJECT_INSTRUCTION})
        elif fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema") or {}
            schema = spec.get("schema") if isinstance(spec, dict) else None
            schema_text = orjson.dumps(schema or {}).decode()
            blocks.append({"type": "text", "text": JSON_SCHEMA_INSTRUCTION + schema_text})
    return blocks


def _conversation(body: dict) -> list[dict]:
    turns = Turns("content")
    add = turns.add
    for role, message in conversation(body):
        if role == "assistant":
            blocks = _content_blocks(message.get("content"))
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": tool_id(call.get("id")),
                        "name": function.get("name") or "",
                        "input": parse_arguments(function.get("arguments")),
                    }
                )
            add("assistant", blocks)
        elif role == "tool":
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": tool_id(message.get("tool_call_id")),
            }
            content = message.get("content")
            if isinstance(content, list):
                parts = _content_blocks(content)
                if parts:
                    result["content"] = parts
            elif content:
                result["content"] = content if isinstance(content, str) else orjson.dumps(content).decode()
            add("user", [result])
        else:  # user (and anything unknown, treated as user input)
            add("user", _content_blocks(message.get("content")))

    merged = turns.turns
    for message in merged:
        if message["role"] == "user":
            # tool_result blocks must come before any other content of the message
            message["content"].sort(key=lambda block: block["type"] != "tool_result")
    if merged and merged[-1]["role"] == "assistant":
        last = merged[-1]["content"][-1]
        if last["type"] == "text":
            last["text"] = last["text"].rstrip()
            if not last["text"]:
                merged[-1]["content"].pop()
                if not merged[-1]["content"]:
                    merged.pop()
    return merged


def _tools(body: dict) -> list[dict]:
    tools = []
    for tool, function, converted in function_tools(body):
        schema = function.get("parameters")
        converted["input_schema"] = (
            schema if isinstance(schema, dict) and schema else {"type": "object", "properties": {}}
        )
        if isinstance(tool.get("cache_control"), dict):
            converted["cache_control"] = tool["cache_control"]
        tools.append(converted)
    return tools


def _history_tools(messages: list[dict]) -> list[dict]:
    """Placeholder declarations for tools used earlier in the conversation.

    Anthropic rejects ``tool_use``/``tool_result`` blocks in a request without ``tools``
    while OpenAI accepts such a history; the placeholders (with ``tool_choice: none``)
    keep the history valid without letting the model call anything.
    """
    names = dict.fromkeys(
        block["name"]
        for message in messages
        for block in message["content"]
        if block["type"] == "tool_use" and block["name"]
    )
    return [
        {
            "name": name,
            "description": "Tool used earlier in this conversation (not available now).",
            "input_schema": {"type": "object", "properties": {}},
        }
        for name in names
    ]


def _tool_choice(body: dict) -> dict | None:
    choice = body.get("tool_choice")
    result: dict[str, Any] | None = None
    if choice == "auto":
        result = {"type": "auto"}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name:
            result = {"type": "tool", "name": name}
    if body.get("parallel_tool_calls") is False:
        result = result or {"type": "auto"}
        result["disable_parallel_tool_use"] = True
    return result


def openai_to_anthropic(body: dict, *, model: str, stream: bool = False) -> dict:
    """OpenAI chat.completions request body -> Anthropic Messages request body."""
    out: dict[str, Any] = {"model": model, "messages": _conversation(body)}
    system = _system_blocks(body)
    if system:
        if any("cache_control" in block for block in system):
            out["system"] = system
        else:
            out["system"] = "\n\n".join(block["text"] for block in system)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = int(max_tokens) if max_tokens else DEFAULT_MAX_TOKENS
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if body.get("top_k") is not None:
        out["top_k"] = body["top_k"]
    sequences = stop_list(body, blank=False)
    if sequences:
        out["stop_sequences"] = sequences
    tools = _tools(body)
    if tools:
        out["tools"] = tools
        put(out, "tool_choice", _tool_choice(body))
    else:
        history_tools = _history_tools(out["messages"])
        if history_tools:
            out["tools"] = history_tools
            out["tool_choice"] = {"type": "none"}
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    if isinstance(body.get("thinking"), dict):  # Anthropic-native knob some clients send
        out["thinking"] = body["thinking"]
    if stream:
        out["stream"] = True
    return out


# --------------------------------------------------------------------------- response


def anthropic_to_openai(
    payload: dict, *, model: str, created: int | None = None
) -> tuple[dict, Usage | None]:
    """Anthropic Messages response -> OpenAI chat.completion (plus usage)."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict] = []
    for block in payload.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking":
            thoughts.append(block.get("thinking") or "")
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    text = "".join(texts)
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if any(thoughts):
        message["reasoning_content"] = "".join(thoughts)
    usage = usage_from_anthropic(payload.get("usage"))
    result = {
        "id": completion_id(payload.get("id")),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model or payload.get("model") or "",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": FINISH_REASONS.get(payload.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": usage_dict(usage),
    }
    # no usage object upstream: say so (None), so the relay counts the answer itself
    return result, usage if isinstance(payload.get("usage"), dict) else None


# --------------------------------------------------------------------------- stream


class AnthropicStreamTranslator(ChatChunkWriter):
    """Anthropic Messages SSE -> OpenAI chat.completion.chunk SSE.

    After an upstream ``error`` event the OpenAI-style error has been sent to the client,
    ``finished`` is True (the stream ended with a terminal event) and ``error`` holds the
    upstream error object, so callers can tell a failure from a success.
    """

    def __init__(self, *, model: str, include_usage: bool, created: int | None = None) -> None:
        super().__init__(model=model, include_usage=include_usage, created=created)
        self._data: list[bytes] = []
        self._started = False
        self._tools: dict[int, int] = {}  # anthropic block index -> openai tool_calls index
        self._raw_usage: dict[str, int] = {}

    # -- chunk helpers
    def _chunk(self, delta: dict, finish_reason: str | None = None) -> bytes:
        return self.choice_chunk(delta, finish_reason)

    def _start(self, message_id: Any = None) -> bytes:
        if self._started:
            return b""
        self._started = True
        self.id = completion_id(message_id)
        return self._chunk({"role": "assistant", "content": ""})

    def _update_usage(self, data: Any) -> None:
        if isinstance(data, dict):
            for key in (
                "input_tokens",
                "output_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
            ):
                if data.get(key) is not None:
                    self._raw_usage[key] = int(data[key])
            self.usage = usage_from_anthropic(self._raw_usage)

    # -- events
    def _event(self, event: dict) -> bytes:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._update_usage(message.get("usage"))
            return self._start(message.get("id"))
        if kind == "error":
            error = event.get("error") or {}
            self.error = error
            self.finished = True
            payload = {
                "error": {
                    "message": str(error.get("message") or "upstream error"),
                    "type": str(error.get("type") or "upstream_error"),
                    "param": None,
                    "code": None,
                }
            }
            return sse(payload)
        if kind not in ("content_block_start", "content_block_delta", "message_delta", "message_stop"):
            return b""  # ping and future event types
        out = self._start()
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = len(self._tools)
                self._tools[int(event.get("index", -1))] = index
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name") or "", "arguments": ""},
                }
                return out + self._chunk({"tool_calls": [call]})
            if block.get("type") == "text" and block.get("text"):
                self.collect(block["text"])
                return out + self._chunk({"content": block["text"]})
            return out
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta" and delta.get("text"):
                self.collect(delta["text"])
                return out + self._chunk({"content": delta["text"]})
            if dtype == "thinking_delta" and delta.get("thinking"):
                self.collect(delta["thinking"])
                return out + self._chunk({"reasoning_content": delta["thinking"]})
            if dtype == "input_json_delta" and delta.get("partial_json"):
                index = self._tools.get(int(event.get("index", -1)))
                if index is None:
                    return out
                self.collect(delta["partial_json"])
                call = {"index": index, "function": {"arguments": delta["partial_json"]}}
                return out + self._chunk({"tool_calls": [call]})
            return out
        if kind == "message_delta":
            self._update_usage(event.get("usage"))
            stop_reason = (event.get("delta") or {}).get("stop_reason")
            if stop_reason:
                return out + self._chunk({}, FINISH_REASONS.get(stop_reason, "stop"))
            return out
        # message_stop
        self.finished = True
        if self.include_usage:
            usage = self.usage or Usage()
            out += self.usage_chunk(usage_dict(usage))
        return out + SSE_DONE

    def _dispatch(self) -> bytes:
        if not self._data:
            return b""
        raw = b"\n".join(self._data)
        self._data = []
        if self.finished:
            return b""
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return b""
        return self._event(event) if isinstance(event, dict) else b""

    def _line(self, line: bytes) -> bytes:
        if not line:
            return self._dispatch()
        if line.startswith(b"data:"):
            self._data.append(line[5:].strip())
        return b""  # event:, id:, retry: and comments carry nothing we need

    def close(self) -> bytes:
        return super().close() + self._dispatch()


# --------------------------------------------------------------------------- adapter


class AnthropicPassthroughStream(StreamTranslator):
    """Anthropic SSE passed through, reading usage and the generated text from
    ``message_start`` / ``content_block_delta`` / ``message_delta`` on the way.

    Lines are re-emitted one by one until ``message_start`` has gone out naming the model
    the client asked for; from then on the upstream's bytes are passed on as they come."""

    def __init__(self, *, model: str = "") -> None:
        super().__init__()
        self.model = model
        self._raw_usage: dict = {}
        self._raw = False  # message_start sent: pass bytes through untouched

    def _data(self, payload: bytes) -> bytes | None:
        """Reads one event; returns its replacement line when it had to change."""
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(event, dict):
            return None
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            text = delta.get("text") or delta.get("partial_json") or delta.get("thinking")
            if isinstance(text, str) and text:
                self.collect(text)
        elif kind in ("message_start", "message_delta"):
            message = event.get("message") if kind == "message_start" else None
            usage = (message or {}).get("usage") if kind == "message_start" else event.get("usage")
            if isinstance(usage, dict):
                self._raw_usage.update({k: v for k, v in usage.items() if v is not None})
                self.usage = usage_from_anthropic(self._raw_usage)
            if isinstance(message, dict):
                self._raw = True
                if self.model and message.get("model", self.model) != self.model:
                    message["model"] = self.model  # the name the client asked for
                    return b"data: " + orjson.dumps(event)
        elif kind == "message_stop":
            self.finished = True
        elif kind == "error":
            self.error = event.get("error") or {"message": "upstream error"}
            self.finished = True
        return None

    def feed(self, data: bytes) -> bytes:
        if self._raw:
            for line in self.buffer.lines(data):
                if line.startswith(b"data:"):
                    self._data(line[5:].strip())
            return data
        out = []
        for line in self.buffer.lines(data):
            if line.startswith(b"data:"):
                line = self._data(line[5:].strip()) or line
            out.append(line + b"\n")
        if self._raw:
            out.append(self.buffer.pending())  # a partial line: sent now, still parsed later
        return b"".join(out)

    def close(self) -> bytes:
        was_raw = self._raw
        rest = self.buffer.rest()
        if rest.startswith(b"data:"):
            self._data(rest[5:].strip())
        return b"" if was_raw else rest


class AnthropicAdapter(Adapter):
    name = "anthropic"
    capabilities = frozenset(
        {
            Capability.CHAT,
            Capability.MESSAGES,
            Capability.COUNT_TOKENS,
            Capability.PROBE,
            Capability.MODEL_LIST,
        }
    )
    # Anthropic has no n, logprobs, seed, penalties or logit bias (docs/providers.md)
    chat_limits = {
        "n": lambda value: value == 1,
        "logprobs": lambda value: value is False,
        "top_logprobs": lambda value: value == 0,
        "logit_bias": lambda value: not value,
        "seed": lambda value: False,
        "presence_penalty": lambda value: value == 0,
        "frequency_penalty": lambda value: value == 0,
    }

    def headers(self, target: Target) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "x-api-key": target.api_key,
            "anthropic-version": target.api_version or DEFAULT_VERSION,
        }
        headers.update(target.extra_headers)
        return headers

    def build_body(self, body: dict, target: Target, *, stream: bool) -> dict:
        return merge_params(
            openai_to_anthropic(body, model=target.upstream_model, stream=stream), target.extra_params
        )

    def chat_request(self, body: dict, target: Target, *, stream: bool) -> UpstreamRequest:
        return UpstreamRequest(
            "POST",
            f"{target.base_url}/messages",
            self.headers(target),
            orjson.dumps(self.build_body(body, target, stream=stream)),
        )

    def chat_response(self, payload: dict, *, model: str) -> tuple[dict, Usage]:
        return anthropic_to_openai(payload, model=model)

    def chat_stream(self, *, model: str, include_usage: bool) -> StreamTranslator:
        return AnthropicStreamTranslator(model=model, include_usage=include_usage)

    # -- the native protocol, for the gateway's own /v1/messages endpoint

    def messages_request(
        self, body: dict, target: Target, *, stream: bool, beta: str | None = None
    ) -> UpstreamRequest:
        """An Anthropic request passed through as it is, but for the model name and the
        route's extra params; the client's ``anthropic-beta`` header is kept."""
        out = dict(body)
        out["model"] = target.upstream_model
        if stream:
            out["stream"] = True
        if target.extra_params:
            merge_params(out, target.extra_params)
        headers = self.headers(target)
        if beta:
            headers["anthropic-beta"] = beta
        return UpstreamRequest("POST", f"{target.base_url}/messages", headers, orjson.dumps(out))

    def messages_stream(self, *, model: str) -> StreamTranslator:
        return AnthropicPassthroughStream(model=model)

    def count_tokens_request(self, body: dict, target: Target, *, beta: str | None = None) -> UpstreamRequest:
        """``/v1/messages/count_tokens`` as the client sent it, for the upstream model."""
        out = {key: value for key, value in body.items() if key in COUNT_TOKENS_FIELDS}
        out["model"] = target.upstream_model
        headers = self.headers(target)
        if beta:
            headers["anthropic-beta"] = beta
        return UpstreamRequest("POST", f"{target.base_url}/messages/count_tokens", headers, orjson.dumps(out))

    def models_request(self, target: Target) -> UpstreamRequest:
        headers = self.headers(target)
        headers.pop("content-type", None)
        return UpstreamRequest("GET", f"{target.base_url}/models?limit=1000", headers, None)

    def models_response(self, payload: bytes) -> list[UpstreamModel]:
        return listed_models(payload, "data", name_field="display_name")

    def probe_request(self, target: Target) -> UpstreamRequest:
        """A one-token message when the probe has a model, else the model list."""
        if not target.upstream_model:
            return self.models_request(target)
        body = {"max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}
        return self.messages_request(body, target, stream=False)

    def classify_error(self, status: int, payload: bytes) -> UpstreamError:
        message = error_message(payload)
        lowered = message.lower()
        error_type = ""
        try:
            data = orjson.loads(payload)
            if isinstance(data, dict) and isinstance(data.get("error"), dict):
                error_type = str(data["error"].get("type") or "")
        except orjson.JSONDecodeError:
            pass
        if status in (401, 403) or error_type in ("authentication_error", "permission_error"):
            return UpstreamError(status, message, "upstream_auth_error", retryable=True, disable=True)
        if "credit balance is too low" in lowered or error_type == "billing_error" or status == 402:
            return UpstreamError(status, message, "upstream_balance_error", retryable=True, disable=True)
        if status == 529 or error_type == "overloaded_error" or status == 429 or status >= 500:
            return UpstreamError(status, message, "upstream_error", retryable=True)
        return super().classify_error(status, payload)


__all__ = [
    "AnthropicAdapter",
    "AnthropicPassthroughStream",
    "AnthropicStreamTranslator",
    "anthropic_to_openai",
    "openai_to_anthropic",
    "usage_from_anthropic",
]
