"""POST /v1/responses and its routes: OpenAI's Responses API for any model that can chat.

Routes whose provider serves the Responses API itself (``Provider.responses_api`` on an
adapter with ``Capability.RESPONSES``) get the request as the client sent it but for the
model name; the upstream keeps the state, and the gateway only records which provider
made a stored response (``UpstreamResponse``) to route follow-ups, retrieve and delete
to it. For every other route the request is translated to a chat request
(``providers.formats.openai_responses``), sent through the normal pipeline to whatever
provider serves the model, and the answer translated back (JSON, or the typed Responses
events). With ``store`` (the API's default) the response, its input items and the
conversation so far are kept per user (``conversations``), so ``previous_response_id``
continues a conversation on providers that keep no state; a response id of another user
does not exist for this one.

Storage is written off the response path (a worker thread, started when the answer is
complete); a follow-up that arrives at the same worker before the write has finished
waits for it (``PENDING``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from urllib.parse import parse_qs

import orjson
from asgiref.sync import sync_to_async

from conversations import selectors, services
from providers.base import Adapter, Capability, ChainedStream, Usage
from providers.formats.openai_responses import (
    ChatPlan,
    ChatStreamToResponses,
    RequestError,
    chat_to_response,
    conversation_after,
    new_id,
    output_text,
    passthrough_answer,
    response_object,
    responses_to_chat,
    responses_usage,
    wants_summary,
)
from providers.registry import get_adapter, supports
from providers.search import configured_backend

from .. import tokens
from ..config import CONFIG, Route
from ..errors import RelayError
from ..forward import Call, UsageRecord, candidates, target_for
from ..http import Context
from ..openapi import OPEN, ref
from ..protocols.responses import RESPONSES, check_responses
from ..tools import responses_search, web_search
from . import Doc, Endpoint
from .chat_completions import chat_call, unsupported_for
from .common import parse_json, require_model, resolve, stream_flag

logger = logging.getLogger("relay")

PREFIX = "/v1/responses/"
DROPPED_HEADER = b"x-gateway-dropped-tools"
WAIT_FOR_WRITE = 10.0  # seconds a read waits for this worker's pending write of the same id
PENDING: dict[str, asyncio.Task] = {}  # response id -> its storage write, while it runs


# --------------------------------------------------------------------------- storage


def _store(ctx: Context, plan: ChatPlan, response: dict, previous: str | None) -> None:
    """Keep ``response`` for its user, in a worker thread; registered in PENDING at once so
    a follow-up on this worker waits for the write instead of missing it."""
    key = ctx.key
    response_id = response["id"]
    write = sync_to_async(services.stored_response_create, thread_sensitive=False)(
        response_id=response_id,
        user_id=key.user_id,
        api_key_id=key.id,
        model=response["model"],
        response=response,
        input_items=plan.input_items,
        messages=conversation_after(plan.messages, response),
        previous_response_id=previous or "",
        created_at=datetime.fromtimestamp(response["created_at"], tz=UTC),
    )
    _pending(response_id, asyncio.ensure_future(write))


def _hold(ctx: Context, response: dict, *, provider_id: int | None, model: str) -> None:
    """Note which provider keeps a passed-through response (off the response path, like
    ``_store``), so follow-ups and retrieve / delete reach it."""
    response_id = response.get("id")
    if not isinstance(response_id, str) or not response_id or provider_id is None:
        return
    key = ctx.key
    write = sync_to_async(services.upstream_response_create, thread_sensitive=False)(
        response_id=response_id, user_id=key.user_id, api_key_id=key.id, provider_id=provider_id, model=model
    )
    _pending(response_id, asyncio.ensure_future(write))


def _pending(response_id: str, task: asyncio.Task) -> None:
    PENDING[response_id] = task

    def done(finished: asyncio.Task) -> None:
        PENDING.pop(response_id, None)
        if not finished.cancelled() and finished.exception() is not None:
            logger.error(
                "storing a response failed", exc_info=finished.exception(), extra={"response": response_id}
            )

    task.add_done_callback(done)


async def _written(response_id: str) -> None:
    pending = PENDING.get(response_id)
    if pending is not None:
        # a failed or slow write is logged by its task: read what there is
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(pending), WAIT_FOR_WRITE)


async def _stored(ctx: Context, response_id: str):
    """The key owner's stored (translated) response, or None (unknown, deleted, another
    user's, or one that a Responses-native upstream keeps: see ``_held``)."""
    await _written(response_id)
    return await sync_to_async(selectors.stored_response_get, thread_sensitive=False)(
        user_id=ctx.key.user_id, response_id=response_id
    )


async def _held(ctx: Context, response_id: str):
    """The key owner's record of a response a Responses-native upstream keeps, or None."""
    await _written(response_id)
    return await sync_to_async(selectors.upstream_response_get, thread_sensitive=False)(
        user_id=ctx.key.user_id, response_id=response_id
    )


def _not_found(response_id: str) -> RelayError:
    return RelayError(404, f"Response with id '{response_id}' not found.", param="response_id")


def _previous_not_found(previous: str) -> RelayError:
    return RelayError(
        400,
        f"Previous response with id '{previous}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


async def _history(ctx: Context, body: dict) -> list[dict]:
    """The chat conversation before this request (translated providers)."""
    previous = body.get("previous_response_id")
    if not previous:
        return []
    stored = await _stored(ctx, previous)
    if stored is None:
        if await _held(ctx, previous) is not None:
            return []  # kept upstream: the gateway has no copy to count or replay
        raise _previous_not_found(previous)
    return stored.messages


async def _item_history(ctx: Context, stored) -> list[dict]:
    """A translated conversation as Responses items (input and output of each turn, oldest
    first), for a follow-up that only Responses-native providers can serve. Reasoning items
    without encrypted content were made by the translation: no upstream can read them."""
    turns: list[list[dict]] = []
    seen: set[str] = set()
    while stored is not None and stored.response_id not in seen and len(seen) < 1000:
        seen.add(stored.response_id)
        turns.append([*stored.input_items, *(stored.response.get("output") or [])])
        previous = stored.previous_response_id
        stored = await _stored(ctx, previous) if previous else None
    items = [item for turn in reversed(turns) for item in turn]
    return [i for i in items if i.get("type") != "reasoning" or i.get("encrypted_content")]


def _translate(body: dict, history: list[dict], reasoning: bool) -> ChatPlan:
    try:
        return responses_to_chat(body, history=history, reasoning=reasoning)
    except RequestError as exc:
        raise RelayError(400, exc.message, param=exc.param, code=exc.code) from None


def native(route: Route) -> bool:
    """The route's upstream serves the Responses API itself: pass requests through."""
    return route.responses_api and supports(route.provider_type, Capability.RESPONSES)


class _Responses:
    """What a Responses ``Call`` does with a provider, as methods of one object that holds
    no reference to the ``Call``: closures over the request that the ``Call`` held (and
    one that set ``call.headers``) made a reference cycle per request, so every request's
    objects waited for the garbage collector (~60 objects each; collections of 8-19 ms,
    docs/decisions.md, "Reference cycles"). ``headers`` is the ``Call``'s list of extra
    response headers: the tools the translation dropped, for translated routes only."""

    __slots__ = (
        "ctx",
        "plan",
        "chat",
        "passthrough",
        "base",
        "model",
        "stream",
        "summary",
        "keep",
        "previous",
        "dropped",
        "headers",
        "native",
        "provider_id",
    )

    def __init__(
        self,
        ctx: Context,
        *,
        plan: ChatPlan | None,
        chat: dict,
        passthrough: dict,
        base: dict,
        model: str,
        stream: bool,
        summary: bool,
        keep: bool,
        previous: str | None,
        dropped: tuple[tuple[bytes, bytes], ...],
    ) -> None:
        self.ctx = ctx
        self.plan = plan
        self.chat = chat
        self.passthrough = passthrough
        self.base = base
        self.model = model
        self.stream = stream
        self.summary = summary
        self.keep = keep
        self.previous = previous
        self.dropped = dropped  # the header naming the dropped tools, when any
        self.headers: list[tuple[bytes, bytes]] = list(dropped)
        self.native = False  # the route being tried (attempts are sequential)
        self.provider_id: int | None = None  # its provider

    def stored(self, response: dict) -> None:
        if self.keep and response.get("status") in ("completed", "incomplete"):
            _store(self.ctx, self.plan, response, self.previous)

    def held_upstream(self, response: dict) -> None:
        if self.keep and response.get("status") in ("completed", "incomplete"):
            _hold(self.ctx, response, provider_id=self.provider_id, model=self.model)

    def build(self, adapter: Adapter, route: Route):
        self.native = native(route)
        self.provider_id = route.provider_id
        self.headers[:] = () if self.native else self.dropped  # tools are dropped by translation only
        if self.native:
            return adapter.responses_request(self.passthrough, target_for(route), stream=self.stream)
        return adapter.chat_request(self.chat, target_for(route), stream=self.stream)

    def answer(self, adapter: Adapter, payload: bytes) -> tuple[bytes, Usage | None]:
        if self.native:
            out, response, usage = passthrough_answer(payload, model=self.model)
            self.held_upstream(response)
            return out, usage
        data, usage = adapter.chat_response(orjson.loads(payload), model=self.model)
        response = chat_to_response(data, response=self.base, tools=self.plan.tools, summary=self.summary)
        if response["usage"] is None:  # the upstream reported none: shown counted, billed estimated
            response["usage"] = responses_usage(
                None,
                input_tokens=tokens.count_chat_prompt(self.chat),
                output_tokens=tokens.count_text(output_text(response)),
            )
        self.stored(response)
        return orjson.dumps(response), usage

    def to_responses(self) -> ChatStreamToResponses:
        return ChatStreamToResponses(
            response=self.base,
            tools=self.plan.tools,
            summary=self.summary,
            input_tokens=tokens.count_chat_prompt(self.chat),
            count_tokens=tokens.count_text,
            on_done=self.stored,
        )

    def translator(self, adapter: Adapter):
        if self.native:
            return adapter.responses_stream(model=self.model, on_done=self.held_upstream)
        return ChainedStream(adapter.chat_stream(model=self.model, include_usage=True), self.to_responses())

    def count_prompt(self) -> int:
        if self.plan is not None and not self.native:
            return tokens.count_chat_prompt(self.chat)
        passthrough = self.passthrough
        return tokens.count_text(
            orjson.dumps([passthrough.get("instructions"), passthrough["input"]]).decode()
        )


# --------------------------------------------------------------------------- create


async def prepare(ctx: Context, raw: bytes, record: UsageRecord) -> tuple[Call, list[Route]]:
    body = parse_json(raw)
    model = require_model(body)
    record.model_requested = model
    check_responses(body)
    stream = record.stream = stream_flag(body)
    info, routes = await resolve(ctx, model, Capability.CHAT, Capability.RESPONSES, what="responses")
    record.price = info.price
    previous = body.get("previous_response_id")
    keep = body.get("store") is not False
    passthrough = dict(body)  # what a Responses-native upstream is sent (but for the model)
    history: list[dict] = []
    if previous:
        held = await _held(ctx, previous)
        if held is not None:
            # the upstream that made it keeps the state: only it can continue
            routes = [r for r in routes if native(r) and r.provider_id == held.provider_id]
            if not routes:
                raise RelayError(
                    400,
                    f"Previous response with id '{previous}' is kept by a provider that no longer "
                    f"serves model '{model}'.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
        else:
            stored = await _stored(ctx, previous)
            if stored is None:
                raise _previous_not_found(previous)
            history = stored.messages
            translated_routes = [r for r in routes if not native(r)]
            if translated_routes:
                routes = translated_routes  # they continue from the gateway's copy
            else:  # replay the gateway's copy to the native upstream as items
                current = body["input"]
                if isinstance(current, str):
                    current = [{"type": "message", "role": "user", "content": current}]
                passthrough["input"] = [*await _item_history(ctx, stored), *current]
                passthrough.pop("previous_response_id", None)
    if info.max_output_tokens and (passthrough.get("max_output_tokens") or 0) > info.max_output_tokens:
        passthrough["max_output_tokens"] = info.max_output_tokens
    searches = responses_search.wanted(body)
    backend = None
    if searches and not any(native(r) for r in routes):
        # no route runs its own web search (native ones get the tool passed through, and a
        # failover from them to a translated one drops it, as any built-in tool)
        backend = configured_backend()  # None: dropped and named, like any built-in tool
    any_translated = any(not native(r) for r in routes)
    plan = _translate(body, history, info.reasoning) if any_translated else None
    chat = plan.chat if plan is not None else {}
    if info.max_output_tokens and chat.get("max_tokens", 0) > info.max_output_tokens:
        chat["max_tokens"] = info.max_output_tokens
    base = response_object(body, response_id=new_id("resp"), model=model)
    summary = wants_summary(body)
    headers = ()
    if plan is not None and backend is not None:  # run by the gateway: not dropped
        plan.dropped_tools = [t for t in plan.dropped_tools if t not in searches]
    if plan is not None and plan.dropped_tools:
        headers = ((DROPPED_HEADER, ",".join(plan.dropped_tools).encode()),)
    state = _Responses(
        ctx,
        plan=plan,
        chat=chat,
        passthrough=passthrough,
        base=base,
        model=model,
        stream=stream,
        summary=summary,
        keep=keep,
        previous=previous,
        dropped=headers,
    )
    check_chat = unsupported_for(chat) if plan is not None else None
    call = Call(
        body=chat or passthrough,
        model=model,
        model_max=info.max_output_tokens,
        stream=stream,
        build=state.build,
        answer=state.answer,
        translator=state.translator,
        count_prompt=state.count_prompt,
        unsupported=check_chat,
        headers=state.headers,
        output_limits=((passthrough, "max_output_tokens"), *(((chat, "max_tokens"),) if chat else ())),
    )
    if backend is not None:

        def make_call(request: dict) -> Call:
            round_call = chat_call(
                request, model=model, stream=stream, include_usage=True, model_max=info.max_output_tokens
            )
            round_call.headers = headers
            return round_call

        present = responses_search.present(
            base=base, tools=plan.tools, summary=summary, stored=state.stored, translator=state.to_responses
        )
        web_search.attach(call, chat, make_call, backend, stream, present=present)
    return call, candidates(routes, info.strategy, model)


# --------------------------------------------------------------------------- other routes


def _query(ctx: Context) -> dict[str, str]:
    parsed = parse_qs(ctx.scope.get("query_string", b"").decode("latin-1"))
    return {name: values[-1] for name, values in parsed.items()}


def _split(ctx: Context) -> tuple[str, str]:
    """``/v1/responses/{id}[/{action}]`` -> (id, action)."""
    response_id, _, action = ctx.path[len(PREFIX) :].partition("/")
    if not response_id or "/" in action:
        raise RelayError(404, f"Unknown endpoint {ctx.method} {ctx.path}.", code="unknown_url")
    return response_id, action


async def retrieve(ctx: Context, relay) -> None:
    """GET /v1/responses/{id} and GET /v1/responses/{id}/input_items."""
    response_id, action = _split(ctx)
    if action not in ("", "input_items"):
        raise RelayError(404, f"Unknown endpoint {ctx.method} {ctx.path}.", code="unknown_url")
    stored = await _stored(ctx, response_id)
    if stored is None:
        await _upstream(ctx, relay, response_id, action)
        return
    if not action:
        await ctx.respond(200, orjson.dumps(stored.response))
        return
    await ctx.respond(200, orjson.dumps(_page(stored.input_items, _query(ctx))))


async def _upstream(ctx: Context, relay, response_id: str, action: str) -> None:
    """Retrieve, input_items, delete or cancel of a response a Responses-native upstream
    keeps: forwarded to the provider that made it (404 for any other user's id)."""
    held = await _held(ctx, response_id)
    if held is None:
        raise _not_found(response_id)
    info = await CONFIG.model(held.model)
    route = next(
        (r for r in (info.routes if info else ()) if r.provider_id == held.provider_id and native(r)), None
    )
    if route is None:
        raise RelayError(
            503,
            f"The provider that keeps response '{response_id}' is not available.",
            code="no_provider",
        )
    adapter = get_adapter(route.provider_type)
    query = ctx.scope.get("query_string", b"").decode("latin-1")
    request = adapter.responses_stored_request(
        ctx.method, response_id, target_for(route), action=action, query=query
    )
    status, payload = await relay.forwarder.fetch(request, timeout=route.timeout)
    if status is None:
        raise RelayError(502, "The provider that keeps this response could not be reached.")
    if status == 200 and ctx.method == "GET" and not action:
        payload, _, _ = passthrough_answer(payload, model=held.model)
    if ctx.method == "DELETE" and status in (200, 404):
        await sync_to_async(services.upstream_response_delete, thread_sensitive=False)(
            user_id=ctx.key.user_id, response_id=response_id
        )
    await ctx.respond(status, payload)


def _page(items: list[dict], query: dict[str, str]) -> dict:
    """One page of input items, as the API paginates them (``after`` an item id)."""
    try:
        limit = int(query.get("limit", 20))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise RelayError(400, "Invalid 'limit': expected an integer between 1 and 100.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise RelayError(400, "Invalid 'order': expected 'asc' or 'desc'.", param="order")
    ordered = items if order == "asc" else items[::-1]
    start = 0
    after = query.get("after")
    if after:
        ids = [item.get("id") for item in ordered]
        start = ids.index(after) + 1 if after in ids else len(ordered)
    data = ordered[start : start + limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0].get("id") if data else None,
        "last_id": data[-1].get("id") if data else None,
        "has_more": start + limit < len(ordered),
    }


async def delete(ctx: Context, relay) -> None:
    response_id, action = _split(ctx)
    if action:
        raise RelayError(404, f"Unknown endpoint {ctx.method} {ctx.path}.", code="unknown_url")
    pending = PENDING.get(response_id)
    if pending is not None:
        await _stored(ctx, response_id)  # let the write finish first
    deleted = await sync_to_async(services.stored_response_delete, thread_sensitive=False)(
        user_id=ctx.key.user_id, response_id=response_id
    )
    if not deleted:
        await _upstream(ctx, relay, response_id, "")
        return
    await ctx.respond(200, orjson.dumps({"id": response_id, "object": "response", "deleted": True}))


async def cancel(ctx: Context, relay) -> None:
    """POST /v1/responses/{id}/cancel: only background responses can be cancelled, and this
    gateway makes none."""
    response_id, action = _split(ctx)
    if action != "cancel":
        raise RelayError(404, f"Unknown endpoint {ctx.method} {ctx.path}.", code="unknown_url")
    if await _stored(ctx, response_id) is None:
        await _upstream(ctx, relay, response_id, action)
        return
    raise RelayError(
        400, "Only responses created with background: true can be cancelled.", param="response_id"
    )


async def input_tokens(ctx: Context, relay) -> None:
    """POST /v1/responses/input_tokens: the input of a Responses request counted here
    (cl100k: an estimate for non-OpenAI models), previous response included."""
    body = parse_json(await ctx.read_body())
    check_responses(body, count_only=True)
    plan = _translate({**body, "stream": False}, await _history(ctx, body), reasoning=False)
    count = tokens.count_chat_prompt(plan.chat)
    await ctx.respond(200, orjson.dumps({"object": "response.input_tokens", "input_tokens": count}))


_ID = ({"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}},)
TAG = "relay: OpenAI"

ENDPOINTS = [
    Endpoint(
        "/v1/responses",
        "POST",
        RESPONSES,
        request_type="responses",
        prepare=prepare,
        doc=Doc(
            "relay_responses_create",
            "Create a response (OpenAI Responses API, any provider)",
            TAG,
            "Response",
            "The response.",
            request="ResponseCreateRequest",
            stream=True,
            description="Passed through to providers marked `responses_api` (OpenAI, Azure: the "
            "upstream keeps the state), translated to a chat request for every other provider "
            "serving `model` (see docs/providers.md), with failover; billed from the upstream's "
            "usage. With `stream: "
            "true`, the typed Responses events (`response.created` ... `response.completed`). "
            "Built-in tools the provider cannot run are dropped and named in the "
            "`x-gateway-dropped-tools` response header. `store` (default true) keeps the response "
            "for its user: `previous_response_id` continues from it.",
        ),
    ),
    Endpoint(
        "/v1/responses/input_tokens",
        "POST",
        RESPONSES,
        handle=input_tokens,
        doc=Doc(
            "relay_responses_input_tokens",
            "Count the input tokens of a Responses request",
            TAG,
            "ResponseInputTokens",
            "The count.",
            request="ResponseCreateRequest",
            description="Counted locally (cl100k), the previous response's conversation included.",
        ),
    ),
    Endpoint(
        PREFIX,
        "GET",
        RESPONSES,
        handle=retrieve,
        prefix=True,
        doc=Doc(
            "relay_responses_retrieve",
            "A stored response",
            TAG,
            "Response",
            "The response.",
            parameters=_ID,
            path="/v1/responses/{response_id}",
            description="Only the key owner's responses exist (404 otherwise).",
        ),
    ),
    Endpoint(
        PREFIX,
        "GET",
        RESPONSES,
        handle=retrieve,
        prefix=True,
        doc=Doc(
            "relay_responses_input_items",
            "The input items of a stored response",
            TAG,
            "ResponseInputItemList",
            "One page of input items.",
            parameters=(
                *_ID,
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                {"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
                {"name": "after", "in": "query", "schema": {"type": "string"}},
            ),
            path="/v1/responses/{response_id}/input_items",
        ),
    ),
    Endpoint(
        PREFIX,
        "DELETE",
        RESPONSES,
        handle=delete,
        prefix=True,
        doc=Doc(
            "relay_responses_delete",
            "Delete a stored response",
            TAG,
            "ResponseDeleted",
            "Deleted.",
            parameters=_ID,
            path="/v1/responses/{response_id}",
        ),
    ),
    Endpoint(
        PREFIX,
        "POST",
        RESPONSES,
        handle=cancel,
        prefix=True,
        doc=Doc(
            "relay_responses_cancel",
            "Cancel a background response",
            TAG,
            "Response",
            "Never: background responses are not supported (400), unknown ids are 404.",
            parameters=_ID,
            path="/v1/responses/{response_id}/cancel",
        ),
    ),
]


# --- OpenAPI: the shapes this module answers with ------------------------------------

SCHEMAS: dict[str, dict] = {
    "ResponseCreateRequest": {
        "type": "object",
        "required": ["model", "input"],
        "additionalProperties": True,
        "description": "OpenAI's Responses request; fields the gateway does not use are ignored.",
        "properties": {
            "model": {"type": "string", "example": "gpt-4o-mini"},
            "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": OPEN}]},
            "instructions": {"type": "string", "nullable": True},
            "tools": {"type": "array", "items": OPEN},
            "tool_choice": {"oneOf": [{"type": "string"}, OPEN]},
            "parallel_tool_calls": {"type": "boolean"},
            "max_output_tokens": {"type": "integer", "minimum": 1, "nullable": True},
            "temperature": {"type": "number", "nullable": True},
            "top_p": {"type": "number", "nullable": True},
            "reasoning": OPEN,
            "text": OPEN,
            "store": {"type": "boolean", "default": True},
            "previous_response_id": {"type": "string", "nullable": True},
            "stream": {"type": "boolean", "default": False},
            "metadata": OPEN,
        },
    },
    "ResponseUsage": {
        "type": "object",
        "additionalProperties": True,
        "properties": {
            "input_tokens": {"type": "integer"},
            "input_tokens_details": OPEN,
            "output_tokens": {"type": "integer"},
            "output_tokens_details": OPEN,
            "total_tokens": {"type": "integer"},
        },
    },
    "Response": {
        "type": "object",
        "required": ["id", "object", "created_at", "model", "output"],
        "additionalProperties": True,
        "properties": {
            "id": {"type": "string", "example": "resp_0123456789abcdef0123456789abcdef"},
            "object": {"type": "string", "enum": ["response"]},
            "created_at": {"type": "integer"},
            "status": {"type": "string", "enum": ["completed", "incomplete", "failed", "in_progress"]},
            "model": {"type": "string"},
            "output": {"type": "array", "items": OPEN},
            "usage": ref("ResponseUsage"),
            "previous_response_id": {"type": "string", "nullable": True},
        },
    },
    "ResponseInputItemList": {
        "type": "object",
        "required": ["object", "data", "has_more"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": OPEN},
            "first_id": {"type": "string", "nullable": True},
            "last_id": {"type": "string", "nullable": True},
            "has_more": {"type": "boolean"},
        },
    },
    "ResponseDeleted": {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["response"]},
            "deleted": {"type": "boolean"},
        },
    },
    "ResponseInputTokens": {
        "type": "object",
        "required": ["object", "input_tokens"],
        "properties": {
            "object": {"type": "string", "enum": ["response.input_tokens"]},
            "input_tokens": {"type": "integer"},
        },
    },
}
