"""POST /v1/chat/completions: any provider type that can chat, translated as needed."""

from __future__ import annotations

import orjson

from providers.base import Adapter, Capability, Usage

from .. import tokens
from ..config import Route
from ..errors import RelayError
from ..forward import Call, UsageRecord, candidates, target_for
from ..http import Context
from ..openapi import OPEN, WEB_SEARCH_FIELD, ref
from ..protocols.openai import OPENAI, check_chat, include_usage
from ..tools import web_search
from . import Doc, Endpoint
from .common import parse_json, require_model, resolve, stream_flag


def unsupported_for(body: dict):
    """The refusal of a provider that cannot honour a parameter of this request."""
    return _Chat(body, "", False, False).unsupported


class _Chat:
    """What a chat ``Call`` does with a provider, as methods of one small object: a stream
    holds its ``Call`` for as long as it lasts, and five closures over the request cost
    each open stream ~1 KB more (docs/decisions.md, "Per-stream memory")."""

    __slots__ = ("request", "model", "stream", "include_usage")

    def __init__(self, request: dict, model: str, stream: bool, include_usage: bool) -> None:
        self.request = request
        self.model = model
        self.stream = stream
        self.include_usage = include_usage

    def build(self, adapter: Adapter, route: Route):
        return adapter.chat_request(self.request, target_for(route), stream=self.stream)

    def answer(self, adapter: Adapter, payload: bytes) -> tuple[bytes, Usage | None]:
        data, usage = adapter.chat_response(orjson.loads(payload), model=self.model)
        return orjson.dumps(data), usage

    def translator(self, adapter: Adapter):
        return adapter.chat_stream(model=self.model, include_usage=self.include_usage)

    def count_prompt(self) -> int:
        return tokens.count_chat_prompt(self.request)

    def unsupported(self, adapter: Adapter) -> tuple[str, str] | None:
        body = self.request
        param = adapter.chat_unsupported(body)
        if param is None:
            return None
        value = orjson.dumps(body.get(param)).decode()
        return param, (
            f"'{param}': {value} is not supported by providers of type {adapter.name}, "
            f"and no other provider of model '{body.get('model')}' can serve it."
        )


def chat_call(
    request: dict, *, model: str, stream: bool, include_usage: bool, model_max: int | None = None
) -> Call:
    """A chat completion request to any provider that chats, answered in chat's shapes."""
    chat = _Chat(request, model, stream, include_usage)
    return Call(
        body=request,
        model=model,
        model_max=model_max,
        stream=stream,
        build=chat.build,
        answer=chat.answer,
        translator=chat.translator,
        count_prompt=chat.count_prompt,
        unsupported=chat.unsupported,
    )


async def prepare(ctx: Context, raw: bytes, record: UsageRecord) -> tuple[Call, list[Route]]:
    body = parse_json(raw)
    model = require_model(body)
    record.model_requested = model
    searching = web_search.web_search_flag(body)
    check_chat(body)
    stream = record.stream = stream_flag(body)
    backend = None
    if searching:
        backend = web_search.backend_or_refuse()
        if (body.get("n") or 1) != 1:
            raise RelayError(
                400,
                "'web_search' answers with one choice: 'n' must be 1.",
                param="n",
                code="unsupported_parameter",
            )
    with_usage = include_usage(body, stream)
    info, routes = await resolve(ctx, model, Capability.CHAT, what="chat completions")
    record.price = info.price
    if searching is None and (body.get("n") or 1) == 1 and web_search.by_default(ctx.key, info):
        backend = web_search.backend_or_refuse()
        searching = True

    def make_call(request: dict) -> Call:
        # the web-search loop sums every round's usage itself: it needs each one's
        return chat_call(
            request,
            model=model,
            stream=stream,
            include_usage=with_usage or searching,
            model_max=info.max_output_tokens,
        )

    call = make_call(body)
    if backend is not None:
        web_search.attach(call, body, make_call, backend, stream, include_usage=with_usage)
    return call, candidates(routes, info.strategy, model)


ENDPOINTS = [
    Endpoint(
        "/v1/chat/completions",
        "POST",
        OPENAI,
        request_type="chat",
        prepare=prepare,
        doc=Doc(
            "relay_chat_completions",
            "Chat completion (OpenAI-compatible, any provider)",
            "relay: OpenAI",
            "ChatCompletion",
            "The completion.",
            request="ChatCompletionRequest",
            stream=True,
            description="Routed to a provider serving `model`, with failover; billed from the "
            "upstream's usage. Parameters a provider cannot honour (see docs/providers.md) "
            "skip that provider, or are refused with 400 naming them.",
        ),
    ),
]


# --- OpenAPI: the shapes this module answers with ------------------------------------

SCHEMAS: dict[str, dict] = {
    "ChatMessage": {
        "type": "object",
        "required": ["role"],
        "additionalProperties": True,
        "properties": {
            "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {
                "nullable": True,
                "oneOf": [{"type": "string"}, {"type": "array", "items": OPEN}],
            },
            "name": {"type": "string"},
            "tool_calls": {"type": "array", "items": OPEN},
            "tool_call_id": {"type": "string"},
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "additionalProperties": True,
        "description": "OpenAI's chat completion request; unknown fields are passed upstream.",
        "properties": {
            "model": {"type": "string", "example": "gpt-4o-mini"},
            "messages": {"type": "array", "minItems": 1, "items": ref("ChatMessage")},
            "stream": {"type": "boolean", "default": False},
            "web_search": WEB_SEARCH_FIELD,
            "stream_options": {
                "type": "object",
                "nullable": True,
                "properties": {"include_usage": {"type": "boolean"}},
            },
            "max_tokens": {"type": "integer", "minimum": 1, "nullable": True},
            "max_completion_tokens": {"type": "integer", "minimum": 1, "nullable": True},
            "temperature": {"type": "number", "nullable": True},
            "top_p": {"type": "number", "nullable": True},
            "tools": {"type": "array", "items": OPEN},
            "tool_choice": {"oneOf": [{"type": "string"}, OPEN]},
            "response_format": OPEN,
            "user": {"type": "string"},
        },
    },
    "Usage": {
        "type": "object",
        "additionalProperties": True,
        "properties": {
            "prompt_tokens": {"type": "integer"},
            "completion_tokens": {"type": "integer"},
            "total_tokens": {"type": "integer"},
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "choices"],
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["chat.completion"]},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": True,
                    "properties": {
                        "index": {"type": "integer"},
                        "message": ref("ChatMessage"),
                        "finish_reason": {"type": "string", "nullable": True},
                    },
                },
            },
            "usage": ref("Usage"),
        },
    },
}
