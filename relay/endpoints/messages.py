"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's protocol for any model.

Provider types with native Messages (Anthropic) get the request as the client sent it,
but for the model name; every other type gets it translated to a chat request, and its
answer translated back (``providers.formats.anthropic_messages``).
"""

from __future__ import annotations

import logging

import orjson

from providers.base import Adapter, Capability, ChainedStream, Usage
from providers.formats.anthropic_messages import (
    ChatStreamToMessages,
    chat_to_messages,
    messages_to_chat,
    shows_thinking,
    wants_thinking,
)
from providers.formats.anthropic_messages import usage_from_anthropic as anthropic_usage
from providers.registry import get_adapter
from providers.search import configured_backend

from .. import tokens
from ..config import Route
from ..forward import Call, UsageRecord, candidates, target_for
from ..http import Context
from ..openapi import OPEN, WEB_SEARCH_FIELD
from ..protocols.anthropic import ANTHROPIC, check_messages
from ..tools import anthropic_search, web_search
from . import Doc, Endpoint
from .chat_completions import chat_call
from .common import parse_json, require_model, resolve, stream_flag

logger = logging.getLogger("relay")


def _echo(payload: bytes, model: str) -> tuple[bytes, Usage | None]:
    data = orjson.loads(payload)
    reported = data.get("usage")
    if data.get("model", model) != model:
        data["model"] = model
        payload = orjson.dumps(data)
    return payload, anthropic_usage(reported) if isinstance(reported, dict) else None


async def prepare(ctx: Context, raw: bytes, record: UsageRecord) -> tuple[Call, list[Route]]:
    body = parse_json(raw)
    model = require_model(body)
    record.model_requested = model
    searching = web_search.web_search_flag(body)  # never forwarded, whatever the provider
    server = anthropic_search.server_tool(body)
    check_messages(body)
    stream = record.stream = stream_flag(body)
    info, routes = await resolve(ctx, model, Capability.MESSAGES, Capability.CHAT, what="messages")
    if server is not None and any(get_adapter(r.provider_type).supports(Capability.MESSAGES) for r in routes):
        server = None  # Anthropic runs its own server tool: passed through as sent
    if server is not None and configured_backend() is None:
        server = None  # no search here: dropped by the translation, as any server tool
    record.price = info.price
    if searching is None:
        searching = web_search.by_default(ctx.key, info)
    beta = ctx.header(b"anthropic-beta")
    reasoning = wants_thinking(body) and info.reasoning  # ask a reasoning model for it
    thinking = shows_thinking(body)  # and show it as thinking blocks
    sequences = tuple(body.get("stop_sequences") or ())
    chat_body: dict = {}

    def as_chat() -> dict:
        if not chat_body:
            chat_body.update(messages_to_chat(body, reasoning=reasoning))
            limit = info.max_output_tokens
            if limit and chat_body.get("max_tokens", 0) > limit:
                # Anthropic clients ask for their own models' limits (Claude Code: 128k)
                chat_body["max_tokens"] = limit
        return chat_body

    def build(adapter: Adapter, route: Route):
        if adapter.supports(Capability.MESSAGES):
            return adapter.messages_request(body, target_for(route), stream=stream, beta=beta)
        return adapter.chat_request(as_chat(), target_for(route), stream=stream)

    def answer(adapter: Adapter, payload: bytes) -> tuple[bytes, Usage | None]:
        if adapter.supports(Capability.MESSAGES):
            return _echo(payload, model)
        response, usage = adapter.chat_response(orjson.loads(payload), model=model)
        message = chat_to_messages(response, model=model, thinking=thinking, stop_sequences=sequences)
        return orjson.dumps(message), usage

    def translator(adapter: Adapter):
        if adapter.supports(Capability.MESSAGES):
            return adapter.messages_stream(model=model)
        return ChainedStream(
            adapter.chat_stream(model=model, include_usage=True),
            ChatStreamToMessages(
                model=model,
                input_tokens=tokens.count_chat_prompt(as_chat()),
                thinking=thinking,
                stop_sequences=sequences,
                count_tokens=tokens.count_text,
            ),
        )

    call = Call(
        body=body,
        model=model,
        model_max=info.max_output_tokens,
        stream=stream,
        build=build,
        answer=answer,
        translator=translator,
        count_prompt=lambda: tokens.count_chat_prompt(as_chat()),
    )
    if searching or server is not None:
        _search_loop(
            call,
            model=model,
            stream=stream,
            chat=as_chat(),
            server=server,
            present=anthropic_search.present(
                model=model,
                thinking=thinking,
                stop_sequences=sequences,
                server=server is not None,
                translator=lambda: ChatStreamToMessages(
                    model=model,
                    input_tokens=tokens.count_chat_prompt(as_chat()),
                    thinking=thinking,
                    stop_sequences=sequences,
                    count_tokens=tokens.count_text,
                ),
            ),
        )
    return call, candidates(routes, info.strategy, model)


def _search_loop(call: Call, *, model: str, stream: bool, chat: dict, server, present) -> None:
    """The gateway's web-search loop over chat-shaped rounds (any provider that chats),
    answered in Anthropic's shapes."""
    backend = web_search.backend_or_refuse()

    def make_call(request: dict) -> Call:
        return chat_call(request, model=model, stream=stream, include_usage=True)

    web_search.attach(call, chat, make_call, backend, stream, present=present, server=server)


async def count_tokens(ctx: Context, relay) -> None:
    """Anthropic-type routes count with the provider itself; any other route (or a failed
    upstream count) is counted here (cl100k: an estimate for non-OpenAI models)."""
    body = parse_json(await ctx.read_body())
    model = require_model(body)
    check_messages(body, count_only=True)
    info, routes = await resolve(ctx, model, Capability.MESSAGES, Capability.CHAT, what="messages")
    beta = ctx.header(b"anthropic-beta")
    for route in candidates(routes, info.strategy, model):
        adapter = get_adapter(route.provider_type)
        if not adapter.supports(Capability.COUNT_TOKENS):
            continue
        request = adapter.count_tokens_request(body, target_for(route), beta=beta)
        status, payload = await relay.forwarder.fetch(request, timeout=route.timeout)
        if status == 200:
            await ctx.respond(200, payload)
            return
        if status is not None and 400 <= status < 500 and status not in (401, 403, 408, 429):
            await ctx.respond(status, payload)  # the client's own mistake, in Anthropic's words
            return
        logger.warning("upstream token count failed; counting locally", extra={"status": status})
        break
    count = tokens.count_chat_prompt(messages_to_chat(body))
    await ctx.respond(200, orjson.dumps({"input_tokens": count}))


ENDPOINTS = [
    Endpoint(
        "/v1/messages",
        "POST",
        ANTHROPIC,
        request_type="messages",
        prepare=prepare,
        doc=Doc(
            "relay_messages",
            "Anthropic Messages, for any model",
            "relay: Anthropic",
            "Message",
            "The message.",
            request="MessagesRequest",
            stream=True,
            description="Passed through to Anthropic-type providers; translated to and from chat "
            "for every other type (system messages anywhere, thinking, tools, stop sequences).",
        ),
    ),
    Endpoint(
        "/v1/messages/count_tokens",
        "POST",
        ANTHROPIC,
        handle=count_tokens,
        doc=Doc(
            "relay_messages_count_tokens",
            "Count the input tokens of a Messages request",
            "relay: Anthropic",
            "TokenCount",
            "The count.",
            request="MessagesRequest",
            description="Counted by the provider for Anthropic-type routes, locally (cl100k) otherwise.",
        ),
    ),
]


# --- OpenAPI: the shapes this module answers with ------------------------------------

SCHEMAS: dict[str, dict] = {
    "MessagesRequest": {
        "type": "object",
        "required": ["model", "messages", "max_tokens"],
        "additionalProperties": True,
        "description": "Anthropic's Messages request, for any model (translated for other providers).",
        "properties": {
            "model": {"type": "string", "example": "claude-3-5-sonnet-latest"},
            "max_tokens": {"type": "integer", "minimum": 1},
            "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": OPEN}]},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "additionalProperties": True,
                    "properties": {
                        "role": {"type": "string", "enum": ["user", "assistant"]},
                        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": OPEN}]},
                    },
                },
            },
            "stream": {"type": "boolean", "default": False},
            "web_search": WEB_SEARCH_FIELD,
            "tools": {"type": "array", "items": OPEN},
        },
    },
    "Message": {
        "type": "object",
        "required": ["id", "type", "role", "content"],
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string", "enum": ["message"]},
            "role": {"type": "string", "enum": ["assistant"]},
            "content": {"type": "array", "items": OPEN},
            "model": {"type": "string"},
            "stop_reason": {"type": "string", "nullable": True},
            "usage": OPEN,
        },
    },
    "TokenCount": {
        "type": "object",
        "required": ["input_tokens"],
        "properties": {"input_tokens": {"type": "integer"}},
    },
}
