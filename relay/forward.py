"""Calling upstreams: the attempt loop with failover, JSON answers, and streams.

A ``Call`` describes one client request and how to build the upstream request for any
candidate route; ``forward`` tries candidates in order until one answers, and fills the
``UsageRecord`` that the pipeline turns into the request's one usage event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import orjson

from billing.pricing import Price
from providers.base import Adapter, StreamTranslator, Target, UpstreamError, UpstreamRequest, Usage
from providers.registry import get_adapter

from . import tokens
from .conf import HOT
from .config import CONFIG, Route
from .db import db_async
from .errors import RelayError
from .http import Context
from .routing import ROUTER
from .upstream_http import UpstreamClient

logger = logging.getLogger(__name__)

RETRYABLE_EXCEPTIONS = (asyncio.TimeoutError, OSError)


@dataclass(slots=True)
class UsageRecord:
    request_type: str
    endpoint: str
    model_requested: str = ""
    model_upstream: str = ""
    model_billed: str = ""
    provider_id: int | None = None
    providers_tried: list = field(default_factory=list)
    stream: bool = False
    usage: Usage | None = None
    usage_estimated: bool = False
    status_code: int = 200
    error: str = ""
    ttft_ms: int | None = None
    client_disconnected: bool = False
    price: Price | None = None
    cut_upstream: bool = False  # the gateway ended the upstream stream itself
    charge_on_failure: bool = False  # a failure after upstream calls that were answered (and billed)
    # a request answered by several upstream calls (the gateway's web-search loop): how many
    # were answered, what its searches cost (nanos, the key's multiplier applied), and the
    # usage log's list of rounds and searches with their costs
    rounds: int = 1
    extra_cost: int = 0
    # what the pipeline reserved for a tool loop: (cost in nanos, completion tokens a round);
    # the loop spends no more than that (it ends early rather than overdraw it)
    allowance: tuple[int, int] | None = None
    breakdown: dict = field(default_factory=dict)
    progress: Callable[[], Usage] | None = None  # a stream's usage so far (its checkpoints)


@dataclass(slots=True)
class Call:
    """One client request, ready to be sent to any candidate."""

    body: dict
    model: str
    stream: bool
    build: Callable[[Adapter, Route], UpstreamRequest]
    # JSON answers: upstream bytes -> (client bytes, usage)
    answer: Callable[[Adapter, bytes], tuple[bytes, Usage | None]]
    # Streams: a translator from upstream bytes to client bytes
    translator: Callable[[Adapter], StreamTranslator] | None = None
    count_prompt: Callable[[], int] = lambda: 0
    model_max: int | None = None  # the model's max_output_tokens, for the reservation estimate
    # what this request needs that an adapter cannot honour: (param, reason) or None
    unsupported: Callable[[Adapter], tuple[str, str] | None] | None = None
    headers: Sequence[tuple[bytes, bytes]] = ()  # extra response headers (JSON and streams)
    # (body, field) pairs that carry the completion limit to the upstream, when ``body``
    # alone does not say it (its max_tokens / max_completion_tokens / max_output_tokens)
    output_limits: tuple[tuple[dict, str], ...] = ()
    # a request answered by several upstream calls (the gateway's web-search loop): runs
    # instead of one forward, with the forwarder, and fills the record with their sum
    run: Callable[[Forwarder, Context, list[Route], UsageRecord], Awaitable[None]] | None = None
    rounds: int = 1  # the most upstream calls ``run`` may make: the reservation covers them all


class StreamProgress:
    """A stream's usage so far: the upstream's figures where it gave them, else its text
    counted locally. The text is counted as it comes (``take``, every ``TAKE_PARTS`` pieces)
    and dropped, so a stream holds the chunk in flight and its counts, never its answer."""

    __slots__ = ("call", "translator", "completion", "prompt", "tail")

    TAKE_PARTS = 16  # pieces of text collected before they are counted and dropped
    TAIL_LIMIT = 8192  # characters kept uncounted while no safe place to cut them shows

    def __init__(self, call: Call, translator: StreamTranslator) -> None:
        self.call = call
        self.translator = translator
        self.completion = 0  # tokens of the text counted so far
        self.prompt: int | None = None
        self.tail = ""  # text collected but not counted yet: the last word may go on

    def take(self, *, final: bool = False) -> None:
        """Count the text collected since the last call, up to the last place where a cut
        leaves the count of the whole unchanged (a space after a non-space: the tokenizer's
        pieces never straddle one), all of it when ``final``."""
        parts = self.translator.text_parts
        if not parts and not (final and self.tail):
            return
        text = self.tail + "".join(parts)
        parts.clear()
        cut = len(text)
        if not final:
            cut = text.rfind(" ")
            while cut > 0 and text[cut - 1].isspace():
                cut = text.rfind(" ", 0, cut - 1)
            if cut <= 0:
                cut = len(text) if len(text) > self.TAIL_LIMIT else 0
        self.completion += tokens.count_text(text[:cut])
        self.tail = text[cut:]

    def __call__(self) -> Usage:
        self.take()
        completion = self.completion + tokens.count_text(self.tail)
        reported = self.translator.usage
        if reported is not None and reported.prompt_tokens:
            self.prompt = reported.prompt_tokens
        elif self.prompt is None:
            self.prompt = self.call.count_prompt()
        completion = max(completion, reported.completion_tokens if reported is not None else 0)
        return Usage(prompt_tokens=self.prompt, completion_tokens=completion)


def target_for(route: Route) -> Target:
    return Target(
        base_url=route.base_url,
        api_key=route.api_key,
        upstream_model=route.upstream_model,
        extra_headers=route.extra_headers,
        extra_params=route.extra_params,
        api_version=route.api_version,
    )


def answer_text(body: bytes) -> str:
    """The generated text of an answer in the client's protocol (chat, completion,
    Anthropic message or Response): what local counting bills when the upstream gave no usage."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    parts: list[str] = []
    for choice in data.get("choices") or ():
        message = choice.get("message") or {}
        parts.append(message.get("content") or choice.get("text") or "")
        parts.extend(
            (call.get("function") or {}).get("arguments") or "" for call in message.get("tool_calls") or ()
        )
    for block in data.get("content") or () if isinstance(data.get("content"), list) else ():
        parts.append(block.get("text") or block.get("thinking") or "")
        if block.get("type") == "tool_use":
            parts.append(orjson.dumps(block.get("input") or {}).decode())
    for item in data.get("output") or () if isinstance(data.get("output"), list) else ():  # a Response
        for part in item.get("content") or () if isinstance(item.get("content"), list) else ():
            parts.append(part.get("text") or part.get("refusal") or "")
        parts.append(item.get("arguments") or item.get("input") or "")
    return "".join(part for part in parts if isinstance(part, str))


def _auto_disable(provider_id: int, reason: str) -> None:
    from providers.services import provider_auto_disable

    provider_auto_disable(provider_id=provider_id, reason=reason)


_background: set[asyncio.Task] = set()


def in_background(coro) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def candidates(routes: list[Route], strategy: str, key: str) -> list[Route]:
    """The attempts to make, in order: each route plus its own retries, capped."""
    ordered = ROUTER.order(routes, strategy, key)
    attempts: list[Route] = []
    for route in ordered:
        attempts.extend([route] * (1 + route.max_retries))
    return attempts[: HOT.RELAY_MAX_ATTEMPTS]


class Forwarder:
    def __init__(self, client: UpstreamClient) -> None:
        self.client = client

    async def fetch(self, request: UpstreamRequest, *, timeout: float) -> tuple[int | None, bytes]:
        """One upstream call outside the billed path (e.g. token counting): its status and
        body, or (None, b"") when it could not be reached."""
        try:
            async with asyncio.timeout(timeout):
                response = await self._send(request, timeout)
                try:
                    return response.status, await response.read()
                finally:
                    response.release()
        except (*RETRYABLE_EXCEPTIONS, ValueError):
            return None, b""

    def _send(self, request: UpstreamRequest, read_timeout: float | None):
        return self.client.request(
            request.method,
            request.url,
            data=request.body,
            headers=request.headers,
            connect_timeout=HOT.RELAY_UPSTREAM_CONNECT_TIMEOUT,
            read_timeout=read_timeout,
        )

    async def forward(
        self, ctx: Context, call: Call, routes: list[Route], record: UsageRecord, *, respond: bool = True
    ) -> bytes | None:
        """Answer the client from the first candidate that answers; with ``respond=False`` a
        JSON answer is returned in the client's protocol instead of sent (a round of a
        gateway-run loop)."""
        last: UpstreamError | None = None
        refused: tuple[str, str] | None = None
        for route in routes:
            adapter = get_adapter(route.provider_type)
            if call.unsupported is not None:
                problem = call.unsupported(adapter)
                if problem is not None:  # this provider cannot honour the request: not a failure
                    refused = problem
                    continue
            try:
                request = call.build(adapter, route)
            except orjson.JSONEncodeError:  # nested deeper than orjson writes, or an integer over 64 bits
                raise RelayError(
                    400, "The request is nested too deeply or holds a number too large to forward."
                ) from None
            state = ROUTER.state(route.provider_id)
            started = time.monotonic()
            state.in_flight += 1
            try:
                response = await self._send(request, route.timeout)
            except (*RETRYABLE_EXCEPTIONS, ValueError) as exc:
                # ValueError: the route's URL or headers cannot be sent (its configuration)
                state.in_flight -= 1
                status = 504 if isinstance(exc, asyncio.TimeoutError) else 502
                message = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
                last = UpstreamError(status, message, retryable=True)
                self._tried(record, route, status, message, started)
                ROUTER.record_failure(route.provider_id)
                continue
            try:
                if 300 <= response.status < 400:
                    # never followed: a POST must not turn into a GET somewhere else
                    await response.read()
                    where = response.headers.get("location", "?")[:200]
                    message = (
                        f"the upstream redirected ({response.status}) to {where}; "
                        "set the provider's base URL to where it points"
                    )
                    self._tried(record, route, response.status, message, started)
                    ROUTER.record_failure(route.provider_id)
                    last = UpstreamError(502, message, retryable=True)
                    continue
                if response.status >= 400:
                    payload = await response.read()
                    error = adapter.classify_error(response.status, payload)
                    self._tried(record, route, response.status, error.message, started)
                    if error.disable:
                        in_background(db_async(_auto_disable)(route.provider_id, error.message))
                    if error.retryable:
                        ROUTER.record_failure(route.provider_id)
                        last = error
                        continue
                    # the client's own mistake: no other provider would answer differently
                    raise RelayError(
                        response.status, error.message, type=error.type, code="upstream_rejected"
                    )
                record.provider_id = route.provider_id
                record.model_upstream = route.upstream_model
                if route.bill_upstream_model:
                    record.model_billed = route.upstream_model
                    record.price = await CONFIG.price_for(route.upstream_model)
                else:
                    record.model_billed = call.model
                self._tried(record, route, response.status, "", started)
                body = None
                if call.stream:
                    request = None  # sent: an open stream does not hold the upstream body
                    await self._stream(ctx, call, adapter, response, record, started)
                else:
                    body = await self._json(ctx, call, adapter, response, record, respond=respond)
                ROUTER.record_success(route.provider_id, (time.monotonic() - started) * 1000)
                return body
            finally:
                state.in_flight -= 1
                if call.stream and (record.error or record.client_disconnected or record.cut_upstream):
                    response.close()  # drop the connection: the upstream stops generating
                else:
                    response.release()
        if last is None and refused is not None:
            param, reason = refused
            raise RelayError(400, reason, param=param, code="unsupported_parameter")
        if last is None:
            raise RelayError(503, f"No provider is available for model '{call.model}'.", code="no_provider")
        status = 429 if last.status == 429 else (504 if last.status == 504 else 502)
        tried = len(record.providers_tried)
        raise RelayError(
            status,
            f"The upstream provider failed ({tried} attempt{'s' if tried != 1 else ''}): {last.message}",
            type="upstream_error",
            code="upstream_failed",
        )

    @staticmethod
    def _tried(record: UsageRecord, route: Route, status: int, error: str, started: float) -> None:
        record.providers_tried.append(
            {
                "provider": route.provider_id,
                "name": route.provider_name,
                "status": status,
                "error": error[:300],
                "ms": int((time.monotonic() - started) * 1000),
            }
        )

    async def _json(
        self,
        ctx: Context,
        call: Call,
        adapter: Adapter,
        response,
        record: UsageRecord,
        *,
        respond: bool = True,
    ) -> bytes:
        payload = await response.read()
        record.ttft_ms = int((time.monotonic() - ctx.started) * 1000)
        try:
            body, usage = call.answer(adapter, payload)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RelayError(502, f"The upstream answered with an unreadable body ({exc}).") from None
        record.usage = usage
        if usage is None:  # the upstream reported none: count the prompt and the answer here
            completion = tokens.count_text(answer_text(body)) if record.request_type != "embedding" else 0
            record.usage = Usage(prompt_tokens=call.count_prompt(), completion_tokens=completion)
            record.usage_estimated = True
        if respond:
            await ctx.respond(200, body, headers=call.headers)
        return body

    async def _stream(
        self, ctx: Context, call: Call, adapter: Adapter, response, record: UsageRecord, started
    ):
        translator = call.translator(adapter)
        progress = record.progress = StreamProgress(call, translator)
        await ctx.start_stream(call.headers)
        error = ""
        tail = b""
        try:
            async for chunk in response.content.iter_any():
                out = translator.feed(chunk)
                if out:
                    if record.ttft_ms is None:
                        record.ttft_ms = int((time.monotonic() - ctx.started) * 1000)
                    await ctx.stream_chunk(out)
                if len(translator.text_parts) >= progress.TAKE_PARTS:
                    progress.take()
                if translator.cut_upstream:
                    break  # the answer is complete for the client (a stop sequence): stop the upstream
            tail = translator.close()
            record.cut_upstream = translator.cut_upstream
            if translator.error:
                # the upstream reported an error in-stream; the translator already told
                # the client in its protocol, so only the record needs it
                reported = translator.error
                record.status_code = 502
                record.error = str(
                    reported.get("message", reported) if isinstance(reported, dict) else reported
                )[:500]
            elif not translator.finished:
                error = "The upstream stream ended before it was complete."
        except RETRYABLE_EXCEPTIONS as exc:
            error = f"The upstream stream was interrupted ({type(exc).__name__})."
        except asyncio.CancelledError:
            record.client_disconnected = True
            self._settle_stream(call, progress, record)
            raise
        self._settle_stream(call, progress, record)
        if error:
            if tail:
                await ctx.stream_chunk(tail)
            record.status_code = 502
            record.error = error
            ending = translator.stream_error(error)
            await ctx.end_stream(ctx.protocol.stream_error(error) if ending is None else ending)
        else:
            # the last bytes (the usage chunk, [DONE]) and the end in one message: a client
            # that leaves as soon as it has them finds the response ended, not cut short
            # (with a write in between, a busy worker could count it a 499)
            await ctx.end_stream(tail or b"")

    @staticmethod
    def _settle_stream(call: Call, progress: StreamProgress, record: UsageRecord) -> None:
        translator = progress.translator
        if translator.usage is not None and translator.finished:
            record.usage = translator.usage
            return
        # no final usage object: count what the upstream produced
        progress.take(final=True)
        prompt = translator.usage.prompt_tokens if translator.usage else call.count_prompt()
        record.usage = Usage(prompt_tokens=prompt, completion_tokens=progress.completion)
        record.usage_estimated = True
