"""The OpenAI-compatible endpoints: validate, pick routes, forward."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs

import orjson
from asgiref.sync import sync_to_async
from django.conf import settings

from billing import reports
from billing.money import from_nanos
from providers.adapters.anthropic import AnthropicAdapter, usage_from_anthropic
from providers.adapters.base import Adapter, Usage
from providers.adapters.messages import (
    ChainedStream,
    ChatStreamToMessages,
    chat_to_messages,
    messages_to_chat,
)
from providers.adapters.openai import OpenAIAdapter, usage_from_openai

from . import tokens
from .config import CONFIG, ModelInfo, Route
from .errors import RelayError
from .http import Context
from .proxy import Call, UsageRecord, anthropic_stream_error, candidates, openai_stream_error, target_for

OPENAI_FAMILY = frozenset({"openai", "openai-compatible", "azure"})


def parse_json(raw: bytes) -> dict:
    if not raw:
        raise RelayError(400, "The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RelayError(400, f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise RelayError(400, "The request body must be a JSON object.")
    return body


def require_model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RelayError(
            400, "You must provide a model parameter.", param="model", code="missing_required_parameter"
        )
    return model


async def resolve(ctx: Context, model: str, *, openai_only: bool = False) -> tuple[ModelInfo, list[Route]]:
    if not ctx.key.model_allowed(model):
        raise RelayError(
            403,
            f"This API key is not allowed to use the model '{model}'.",
            code="model_not_allowed",
            param="model",
        )
    info = await CONFIG.model(model)
    if info is None:
        raise RelayError(
            404,
            f"The model '{model}' does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    routes = [r for r in info.routes if r.provider_type in OPENAI_FAMILY] if openai_only else info.routes
    if not routes:
        raise RelayError(
            503, f"No provider is available for model '{model}' on this endpoint.", code="no_provider"
        )
    return info, routes


def _check_chat(body: dict) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RelayError(
            400, "'messages' must be a non-empty array.", param="messages", code="missing_required_parameter"
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RelayError(
                400, f"messages[{index}] must be an object with a 'role'.", param=f"messages[{index}]"
            )
    n = body.get("n", 1)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128):
        raise RelayError(400, "'n' must be an integer between 1 and 128.", param="n")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise RelayError(400, f"'{name}' must be a positive integer.", param=name)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise RelayError(400, "'stream_options' must be an object.", param="stream_options")


def _passthrough_answer(adapter: Adapter, payload: bytes) -> tuple[bytes, Usage | None]:
    data = orjson.loads(payload)
    return payload, usage_from_openai(data.get("usage"))


def _translated_answer(model: str):
    def answer(adapter: Adapter, payload: bytes) -> tuple[bytes, Usage | None]:
        if isinstance(adapter, OpenAIAdapter):  # same protocol: send the bytes as they came
            return _passthrough_answer(adapter, payload)
        data, usage = adapter.chat_response(orjson.loads(payload), model=model)
        return orjson.dumps(data), usage

    return answer


async def chat_completions(ctx: Context, raw: bytes, record: UsageRecord) -> tuple[Call, list[Route]]:
    body = parse_json(raw)
    model = require_model(body)
    record.model_requested = model
    _check_chat(body)
    stream = bool(body.get("stream"))
    record.stream = stream
    include_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
    info, routes = await resolve(ctx, model)
    record.price = info.price
    call = Call(
        body=body,
        model=model,
        model_max=info.max_output_tokens,
        stream=stream,
        build=lambda adapter, route: adapter.chat_request(body, target_for(route), stream=stream),
        answer=_translated_answer(model),
        translator=lambda adapter: adapter.chat_stream(model=model, include_usage=include_usage),
        count_prompt=lambda: tokens.count_chat_prompt(body),
        stream_error=openai_stream_error,
    )
    return call, candidates(routes, info.strategy, model)


def _openai_passthrough(path: str, body: dict, *, stream: bool):
    def build(adapter: Adapter, route: Route):
        return adapter.passthrough_request(path, body, target_for(route), stream=stream)

    return build


async def completions(ctx: Context, raw: bytes, record: UsageRecord) -> tuple[Call, list[Route]]:
    body = parse_json(raw)
    model = require_model(body)
    record.model_requested = model
    if "prompt" not in body:
        raise RelayError(400, "You must provide a prompt parameter.", param="prompt")
    stream = bool(body.get("stream"))
    record.stream = stream
    include_usage = stream and bool((body.get("stream_options") or {}).get("include_usage"))
    info, routes = await resolve(ctx, model, openai_only=True)
    record.price = info.price
    call = Call(
        body=body,
        model=model,
        model_max=info.max_output_tokens,
        stream=stream,
        build=_openai_passthrough("/completions", body, stream=stream),
        answer=_passthrough_answer,
        translator=lambda adapter: adapter.chat_stream(model=model, include_usage=include_usage),
        count_prompt=lambda: tokens.count_prompt_input(body.get("prompt")),
        stream_error=openai_stream_error,
    )
    return call, candidates(routes, info.strategy, model)


async def embeddings(ctx: Context, raw: bytes, record: UsageRecord) -> tuple[Call, list[Route]]:
    body = parse_json(raw)
    model = require_model(body)
    record.model_requested = model
    value = body.get("input")
    if not value or not isinstance(value, str | list):
        raise RelayError(400, "'input' must be a non-empty string or array.", param="input")
    info, routes = await resolve(ctx, model, openai_only=True)
    record.price = info.price
    call = Call(
        body=body,
        model=model,
        model_max=info.max_output_tokens,
        stream=False,
        build=_openai_passthrough("/embeddings", body, stream=False),
        answer=_passthrough_answer,
        count_prompt=lambda: tokens.count_prompt_input(value),
    )
    return call, candidates(routes, info.strategy, model)


def _model_object(info: ModelInfo) -> dict:
    return {"id": info.slug, "object": "model", "created": info.created, "owned_by": info.owned_by}


async def list_models(ctx: Context) -> None:
    catalog = await CONFIG.all_models()
    data = [_model_object(m) for m in catalog if ctx.key.model_allowed(m.slug)]
    await ctx.respond(200, orjson.dumps({"object": "list", "data": data}))


async def retrieve_model(ctx: Context, slug: str) -> None:
    info = await CONFIG.model(slug) if ctx.key.model_allowed(slug) else None
    if info is None or not info.routes:
        raise RelayError(
            404, f"The model '{slug}' does not exist or you do not have access to it.", code="model_not_found"
        )
    await ctx.respond(200, orjson.dumps(_model_object(info)))


# --- Anthropic Messages, for any model ----------------------------------------------------


def _check_messages(body: dict) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RelayError(400, "messages: field required (a non-empty array)", param="messages")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RelayError(400, "max_tokens: field required (a positive integer)", param="max_tokens")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise RelayError(400, f"messages.{index}.role: must be 'user' or 'assistant'", param="messages")


async def messages(ctx: Context, raw: bytes, record: UsageRecord) -> tuple[Call, list[Route]]:
    """/v1/messages: passed through to Anthropic upstreams, translated for all others."""
    body = parse_json(raw)
    model = require_model(body)
    record.model_requested = model
    _check_messages(body)
    stream = bool(body.get("stream"))
    record.stream = stream
    info, routes = await resolve(ctx, model)
    record.price = info.price
    beta = ctx.header(b"anthropic-beta")
    chat_body: dict = {}

    def as_chat() -> dict:
        if not chat_body:
            chat_body.update(messages_to_chat(body))
        return chat_body

    def build(adapter: Adapter, route: Route):
        if isinstance(adapter, AnthropicAdapter):
            return adapter.messages_request(body, target_for(route), stream=stream, beta=beta)
        return adapter.chat_request(as_chat(), target_for(route), stream=stream)

    def answer(adapter: Adapter, payload: bytes) -> tuple[bytes, Usage | None]:
        if isinstance(adapter, AnthropicAdapter):
            reported = orjson.loads(payload).get("usage")
            return payload, usage_from_anthropic(reported) if isinstance(reported, dict) else None
        if isinstance(adapter, OpenAIAdapter):
            response = orjson.loads(payload)
            usage = usage_from_openai(response.get("usage"))
        else:
            response, usage = adapter.chat_response(orjson.loads(payload), model=model)
        return orjson.dumps(chat_to_messages(response, model=model)), usage

    def translator(adapter: Adapter):
        if isinstance(adapter, AnthropicAdapter):
            return adapter.messages_stream()
        return ChainedStream(
            adapter.chat_stream(model=model, include_usage=True), ChatStreamToMessages(model=model)
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
        stream_error=anthropic_stream_error,
    )
    return call, candidates(routes, info.strategy, model)


async def count_message_tokens(ctx: Context) -> None:
    """/v1/messages/count_tokens, counted locally (cl100k: an estimate for non-OpenAI models)."""
    body = parse_json(await ctx.read_body())
    model = require_model(body)
    if not isinstance(body.get("messages"), list):
        raise RelayError(400, "messages: field required", param="messages")
    await resolve(ctx, model)
    await ctx.respond(200, orjson.dumps({"input_tokens": tokens.count_chat_prompt(messages_to_chat(body))}))


# --- usage and balance for the key's owner (reports; not on the inference path) ----------


def _dates(ctx: Context, default_days: int | None = None) -> tuple[date, date]:
    query = parse_qs(ctx.scope.get("query_string", b"").decode("latin-1"))
    today = datetime.now(UTC).date()
    default_start = today - timedelta(days=default_days - 1) if default_days else today.replace(day=1)
    try:
        start = date.fromisoformat(query["start_date"][0]) if "start_date" in query else default_start
        end = date.fromisoformat(query["end_date"][0]) if "end_date" in query else today
    except ValueError:
        raise RelayError(
            400, "start_date and end_date must be dates such as 2026-01-31.", param="start_date"
        ) from None
    if end < start:
        raise RelayError(400, "end_date is before start_date.", param="end_date")
    if (end - start).days > 366:
        raise RelayError(400, "The period may span at most 366 days.", param="start_date")
    return start, end


async def usage(ctx: Context) -> None:
    """GET /v1/usage: this key's requests, tokens and cost per model over a period."""
    start, end = _dates(ctx)
    report = await sync_to_async(reports.key_usage)(key_id=ctx.key.id, start=start, end=end)
    body = {
        "object": "usage",
        "key": ctx.key.prefix,
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "currency": settings.BILLING_CURRENCY,
        **report,
    }
    await ctx.respond(200, orjson.dumps(body))


def _subscription_sync(key_id: int) -> tuple[int, int, int | None, float | None]:
    from keys.models import APIKey

    row = APIKey.objects.select_related("user").get(pk=key_id)
    expires = row.expires_at.timestamp() if row.expires_at else None
    return row.user.balance + row.user.credit_limit, row.spent, row.budget, expires


async def billing_subscription(ctx: Context) -> None:
    """GET /v1/dashboard/billing/subscription, as chat front-ends query it: they show
    hard_limit_usd minus the usage reported by .../usage as the remaining balance."""
    available, spent, budget, expires = await sync_to_async(_subscription_sync)(ctx.key.id)
    if budget is not None:
        hard = budget
        available = min(available, budget - spent)
    else:
        hard = available + spent
    hard_usd = float(from_nanos(hard))
    body = {
        "object": "billing_subscription",
        "has_payment_method": True,
        "soft_limit_usd": hard_usd,
        "hard_limit_usd": hard_usd,
        "system_hard_limit_usd": hard_usd,
        "access_until": int(expires or 0),
        "remaining_usd": float(from_nanos(available)),
    }
    await ctx.respond(200, orjson.dumps(body))


async def billing_usage(ctx: Context) -> None:
    """GET /v1/dashboard/billing/usage: total_usage in cents. Without dates it is the key's
    whole spending, which is what the subscription's hard limit is measured against."""
    query = ctx.scope.get("query_string", b"")
    if b"start_date" in query or b"end_date" in query:
        start, end = _dates(ctx, default_days=100)
        cost = await sync_to_async(reports.key_cost_between)(key_id=ctx.key.id, start=start, end=end)
    else:
        cost = (await sync_to_async(_subscription_sync)(ctx.key.id))[1]
    await ctx.respond(200, orjson.dumps({"object": "list", "total_usage": float(from_nanos(cost) * 100)}))
