"""POST /v1/chat/completions: any provider type that can chat, translated as needed."""

from __future__ import annotations

import orjson

from providers.base import Adapter, Capability, Usage

from .. import tokens
from ..config import Route
from ..forward import Call, UsageRecord, candidates, target_for
from ..http import Context
from ..protocols.openai import OPENAI, check_chat, include_usage
from . import Endpoint
from .common import parse_json, require_model, resolve, stream_flag


def unsupported_for(body: dict):
    """The refusal of a provider that cannot honour a parameter of this request."""

    def check(adapter: Adapter) -> tuple[str, str] | None:
        param = adapter.chat_unsupported(body)
        if param is None:
            return None
        value = orjson.dumps(body.get(param)).decode()
        return param, (
            f"'{param}': {value} is not supported by providers of type {adapter.name}, "
            f"and no other provider of model '{body.get('model')}' can serve it."
        )

    return check


async def prepare(ctx: Context, raw: bytes, record: UsageRecord) -> tuple[Call, list[Route]]:
    body = parse_json(raw)
    model = require_model(body)
    record.model_requested = model
    check_chat(body)
    stream = record.stream = stream_flag(body)
    with_usage = include_usage(body, stream)
    info, routes = await resolve(ctx, model, Capability.CHAT, what="chat completions")
    record.price = info.price

    def answer(adapter: Adapter, payload: bytes) -> tuple[bytes, Usage | None]:
        data, usage = adapter.chat_response(orjson.loads(payload), model=model)
        return orjson.dumps(data), usage

    call = Call(
        body=body,
        model=model,
        model_max=info.max_output_tokens,
        stream=stream,
        build=lambda adapter, route: adapter.chat_request(body, target_for(route), stream=stream),
        answer=answer,
        translator=lambda adapter: adapter.chat_stream(model=model, include_usage=with_usage),
        count_prompt=lambda: tokens.count_chat_prompt(body),
        unsupported=unsupported_for(body),
    )
    return call, candidates(routes, info.strategy, model)


ENDPOINTS = [
    Endpoint("/v1/chat/completions", "POST", OPENAI, request_type="chat", prepare=prepare),
]
