"""POST /v1/completions (legacy text completions) and POST /v1/embeddings: the OpenAI
protocol itself, for the provider types that speak it."""

from __future__ import annotations

import orjson

from providers.base import Adapter, Capability, Usage
from providers.formats.openai_chat import usage_from_openai

from .. import tokens
from ..config import Route
from ..errors import RelayError
from ..forward import Call, UsageRecord, candidates, target_for
from ..http import Context
from ..openapi import OPEN, ref
from ..protocols.openai import OPENAI, check_embedding_input, check_stop, include_usage
from . import Doc, Endpoint
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
    check_stop(body)
    stream = record.stream = stream_flag(body)
    with_usage = include_usage(body, stream)
    info, routes = await resolve(ctx, model, Capability.COMPLETIONS, what="text completions")
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
