"""POST /v1/completions (legacy text completions) and POST /v1/embeddings: the OpenAI
protocol itself, for the provider types that speak it."""

from __future__ import annotations

import orjson

from providers.base import Adapter, Capability, Usage
from providers.formats.openai_chat import (
    ChatStreamToCompletions,
    chat_to_completion,
    prompt_to_chat,
    usage_from_openai,
)

from .. import tokens
from ..config import Route
from ..errors import RelayError
from ..forward import Call, UsageRecord, candidates, target_for
from ..http import Context
from ..openapi import OPEN, WEB_SEARCH_FIELD, ref
from ..protocols.openai import OPENAI, check_embedding_input, check_stop, include_usage
from ..tools import web_search
from . import Doc, Endpoint
from .chat_completions import chat_call
from .common import parse_json, require_model, resolve, stream_flag


def echo_model(model: str):
    """A same-protocol answer: parsed once for its usage, and naming the model the client
    asked for (re-encoded only when the upstream named another)."""

    def answer(adapter: Adapter, payload: bytes) -> tuple[bytes, Usage | None]:
        data = orjson.loads(payload)
        usage = usage_from_openai(data.get("usage"))
        if data.get("model", model) != model:
            data["model"] = model
            payload = orjson.dumps(data)
        return payload, usage

    return answer


async def prepare_completion(ctx: Context, raw: bytes, record: UsageRecord) -> tuple[Call, list[Route]]:
    body = parse_json(raw)
    model = require_model(body)
    record.model_requested = model
    if "prompt" not in body:
        raise RelayError(400, "You must provide a prompt parameter.", param="prompt")
    searching = web_search.web_search_flag(body)
    check_stop(body)
    stream = record.stream = stream_flag(body)
    with_usage = include_usage(body, stream)
    if searching:
        return await _prepare_search(ctx, body, record, model=model, stream=stream, with_usage=with_usage)
    info, routes = await resolve(ctx, model, Capability.COMPLETIONS, what="text completions")
    if (
        searching is None
        and _one_prompt(body)
        and (body.get("n") or 1) == 1
        and web_search.by_default(ctx.key, info)
    ):
        return await _prepare_search(ctx, body, record, model=model, stream=stream, with_usage=with_usage)
    record.price = info.price
    call = Call(
        body=body,
        model=model,
        model_max=info.max_output_tokens,
        stream=stream,
        build=lambda adapter, route: adapter.completions_request(body, target_for(route), stream=stream),
        answer=echo_model(model),
        translator=lambda adapter: adapter.chat_stream(model=model, include_usage=with_usage),
        count_prompt=lambda: tokens.count_prompt_input(body.get("prompt")),
    )
    return call, candidates(routes, info.strategy, model)


def _one_prompt(body: dict) -> bool:
    prompt = body.get("prompt")
    return isinstance(prompt, str) or (
        isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str)
    )


async def _prepare_search(ctx: Context, body: dict, record: UsageRecord, *, model, stream, with_usage):
    """``"web_search": true``: the prompt is wrapped as a chat request, the gateway's loop
    runs over any provider that chats, and the answer is a text completion again."""
    if not _one_prompt(body):
        if (body.get("n") or 1) != 1:
            raise RelayError(400, "'web_search' answers with one choice: 'n' must be 1.", param="n")
        raise RelayError(400, "'web_search' needs one prompt (a string).", param="prompt")
    backend = web_search.backend_or_refuse()
    info, routes = await resolve(ctx, model, Capability.CHAT, what="text completions with web search")
    record.price = info.price
    chat = prompt_to_chat(body)

    def make_call(request: dict) -> Call:
        return chat_call(
            request, model=model, stream=stream, include_usage=True, model_max=info.max_output_tokens
        )

    call = make_call(chat)
    web_search.attach(
        call,
        chat,
        make_call,
        backend,
        stream,
        present=web_search.Present(
            json=lambda data, tools: orjson.dumps(chat_to_completion(data, model=model)),
            stream=lambda: ChatStreamToCompletions(model=model, include_usage=with_usage),
        ),
    )
    return call, candidates(routes, info.strategy, model)


async def prepare_embedding(ctx: Context, raw: bytes, record: UsageRecord) -> tuple[Call, list[Route]]:
    body = parse_json(raw)
    model = require_model(body)
    record.model_requested = model
    value = body.get("input")
    check_embedding_input(value)
    info, routes = await resolve(ctx, model, Capability.EMBEDDINGS, what="embeddings")
    record.price = info.price
    call = Call(
        body=body,
        model=model,
        model_max=info.max_output_tokens,
        stream=False,
        build=lambda adapter, route: adapter.embeddings_request(body, target_for(route)),
        answer=echo_model(model),
        count_prompt=lambda: tokens.count_prompt_input(value),
    )
    return call, candidates(routes, info.strategy, model)


ENDPOINTS = [
    Endpoint(
        "/v1/completions",
        "POST",
        OPENAI,
        request_type="completion",
        prepare=prepare_completion,
        doc=Doc(
            "relay_completions",
            "Text completion (legacy OpenAI)",
            "relay: OpenAI",
            "Completion",
            "The completion.",
            request="CompletionRequest",
            stream=True,
        ),
    ),
    Endpoint(
        "/v1/embeddings",
        "POST",
        OPENAI,
        request_type="embedding",
        prepare=prepare_embedding,
        doc=Doc(
            "relay_embeddings",
            "Embeddings",
            "relay: OpenAI",
            "EmbeddingList",
            "The embeddings.",
            request="EmbeddingRequest",
        ),
    ),
]


# --- OpenAPI: the shapes this module answers with ------------------------------------

SCHEMAS: dict[str, dict] = {
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "additionalProperties": True,
        "properties": {
            "model": {"type": "string", "example": "gpt-3.5-turbo-instruct"},
            "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "stream": {"type": "boolean", "default": False},
            "web_search": WEB_SEARCH_FIELD,
            "max_tokens": {"type": "integer", "minimum": 1, "nullable": True},
        },
    },
    "Completion": {
        "type": "object",
        "required": ["id", "object", "choices"],
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["text_completion"]},
            "choices": {"type": "array", "items": OPEN},
            "usage": ref("Usage"),
        },
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "additionalProperties": True,
        "properties": {
            "model": {"type": "string", "example": "text-embedding-3-small"},
            "input": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "array", "items": {"type": "integer"}},
                    {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
                ]
            },
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            "dimensions": {"type": "integer", "minimum": 1},
        },
    },
    "EmbeddingList": {
        "type": "object",
        "required": ["object", "data"],
        "additionalProperties": True,
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": OPEN},
            "model": {"type": "string"},
            "usage": ref("Usage"),
        },
    },
}
