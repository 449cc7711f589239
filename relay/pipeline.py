"""The one path every billable request takes, whatever its endpoint:

read the body -> the endpoint prepares the call (validation, model, routes) -> limits and
reservation in one counter-store step -> forward with failover (streams watched for the
client leaving) -> exactly one typed usage event, settled against the reservation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time

from django.conf import settings

from billing.events import UsageEvent
from billing.pricing import token_cost
from observability.metrics import METRICS

from .endpoints import Endpoint
from .errors import RelayError
from .forward import Forwarder, UsageRecord
from .http import ClientGone, Context
from .limits import (
    FIT_EXACT_CHARS,
    build_plan,
    completion_that_fits,
    estimate_prompt_tokens,
    for_money,
    lower_completion,
    refusal_error,
    requested_completion,
    scale_plan,
)

logger = logging.getLogger("relay")
STORE_RETRY_AFTER = b"2"
LOWERED_HEADER = b"x-gateway-max-tokens-lowered"
FIT_ATTEMPTS = 3  # reservations tried with a lower completion limit before answering 402


class StoreUnavailable(RelayError):
    def __init__(self) -> None:
        super().__init__(
            503,
            "The gateway's limits store is unavailable; retry shortly.",
            type="api_error",
            code="store_unavailable",
            headers=[(b"retry-after", STORE_RETRY_AFTER)],
        )


class Pipeline:
    def __init__(self, forwarder: Forwarder, store, usage) -> None:
        self.forwarder = forwarder
        self.store = store
        self.usage = usage

    async def run(self, ctx: Context, endpoint: Endpoint) -> None:
        """Reserve, forward, then settle the reservation with the actual use (or queue the
        usage event when nothing was reserved). Exactly one usage event leaves here."""
        record = UsageRecord(request_type=endpoint.request_type, endpoint=ctx.path)
        plan = None
        try:
            raw = await ctx.read_body()
            call, routes = await endpoint.prepare(ctx, raw, record)
            raw = None  # parsed: a stream does not hold the request's bytes while it lasts
            allowed, asked = requested_completion(call.body, record.request_type, call.model_max)
            wanted = _plan(ctx, call, record, completion=allowed)
            refusal = await self._reserve(wanted)
            if refusal is not None:
                wanted = await self._fit(ctx, call, record, wanted, refusal)
            limit = asked or allowed
            if limit > wanted.completion_tokens:
                # the upstream is sent no higher completion limit than was reserved
                lower_completion(call, wanted.completion_tokens)
                ctx.extra_headers = ((LOWERED_HEADER, f"{limit}->{wanted.completion_tokens}".encode()),)
            plan = wanted  # reserved: from here on, the finish settles it
            if call.stream and self.store.remote:
                # checkpoints in Redis: a killed worker's stream is billed from its last one
                self.store.watch(plan, functools.partial(checkpoint_event, ctx, record, plan))
            if call.run is not None:  # several upstream calls (the gateway's tool loop)
                record.allowance = (plan.est_cost, plan.completion_tokens)
                work = call.run(self.forwarder, ctx, routes, record)
            else:
                work = self.forwarder.forward(ctx, call, routes, record)
            if call.stream:
                # streams watch for the client leaving, to cancel the upstream at once
                await self._until_done_or_gone(ctx, work, record)
            else:
                await work
        except RelayError as exc:
            record.status_code = exc.status
            record.error = exc.message
            raise
        except ClientGone:
            record.client_disconnected = True
            record.status_code = 499
            raise
        except Exception as exc:  # answered by the app with a 500: the usage log says so too
            record.status_code = 500
            record.error = f"gateway error: {type(exc).__name__}"
            raise
        finally:
            event = usage_event(ctx, record)
            if plan is not None:
                reserved(event, plan)
            METRICS.observe(event)  # in-process tallies only; exported off the request path
            if plan is None:
                self.usage.push(event)
            else:
                # Redis: off the response path, in the worker's next flush (shutdown waits
                # for it); in process: at once
                finish = self.store.finish if self.store.remote else self.store.finish_sync
                finish(plan, tokens=event.tokens, cost=event.cost, event=event)

    async def _fit(self, ctx: Context, call, record: UsageRecord, plan, refusal):
        """Refused for money (balance, key budget, a cost quota): reserve the largest
        completion that what is left pays for instead, down to a minimal answer, or answer
        the refusal with what was needed. Only refused requests pay these round trips."""
        minimum = min(settings.RELAY_MIN_COMPLETION_TOKENS, plan.completion_tokens)
        wanted = plan
        if for_money(refusal) and refusal.remaining > 0:
            # a long prompt's count was a bound: count it exactly now that it matters
            exact = estimate_prompt_tokens(call.body, FIT_EXACT_CHARS)
            if exact < plan.prompt_tokens:
                plan = wanted = _plan(ctx, call, record, prompt=exact, completion=plan.completion_tokens)
                refusal = await self._reserve(wanted)
                if refusal is None:
                    return wanted
        for _ in range(FIT_ATTEMPTS):
            fits = completion_that_fits(wanted, refusal, record.price, ctx.key.multiplier, rounds=call.rounds)
            if fits < minimum or fits >= wanted.completion_tokens:
                break
            wanted = _plan(ctx, call, record, prompt=plan.prompt_tokens, completion=fits)
            refusal = await self._reserve(wanted)
            if refusal is None:
                return wanted
        raise refusal_error(refusal, ctx.key, plan=plan, price=record.price, model=call.model)

    async def _reserve(self, plan):
        """The counter store's verdict; its outage is a 503 the client may retry, never a
        500 (limits fail closed: nothing is served that could not be counted)."""
        try:
            return await self.store.reserve(plan)
        except (RelayError, asyncio.CancelledError):
            raise
        except Exception as exc:
            logger.warning("counter store unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
            raise StoreUnavailable() from None

    @staticmethod
    async def _until_done_or_gone(ctx: Context, work, record: UsageRecord) -> None:
        """Run a stream's ``work`` in this task, cut short when the client leaves (the
        upstream is cancelled at once): a callback on one pending ``receive``. A task for
        the work beside a watcher task, joined by ``asyncio.wait``, cost each open stream
        about 2 KB more (docs/decisions.md, "Per-stream memory")."""
        watch = ClientWatch(ctx)
        try:
            await work
        except asyncio.CancelledError:
            if not watch.left:
                raise  # this request is being cancelled (shutdown): the forwarder recorded its use
            watch.task.uncancel()  # the forwarder recorded the usage produced so far
        except Exception:
            if not watch.left:
                raise
            logger.warning("stream ended with an error after the client left", exc_info=True)
        else:
            if watch.left:  # the work ended anyway (it caught the cancellation)
                watch.task.uncancel()
        finally:
            watch.stop()
        if watch.left:
            record.client_disconnected = True
            if record.status_code < 400:
                record.status_code = 499  # nginx's "client closed request"


class ClientWatch:
    """Cancels the current task when its client disconnects mid-response: one ``receive``
    pending for the whole stream, with a done callback. A client that leaves after the
    last byte (it read the whole stream) does not cut the request short: the forwarder
    finishes its accounting undisturbed."""

    __slots__ = ("ctx", "task", "receiving", "left")

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.task = asyncio.current_task()
        self.left = False
        self.receiving: asyncio.Future | None = None
        self._arm()

    def _arm(self) -> None:
        self.receiving = asyncio.ensure_future(self.ctx.receive())
        self.receiving.add_done_callback(self._received)

    def _received(self, receiving: asyncio.Future) -> None:
        if receiving is not self.receiving or receiving.cancelled() or receiving.exception() is not None:
            return  # stopped, or the server cannot tell us (nothing to watch)
        if receiving.result()["type"] != "http.disconnect":
            self._arm()
        elif not self.ctx.response_ended:
            self.left = True
            self.task.cancel()

    def stop(self) -> None:
        receiving, self.receiving = self.receiving, None
        if receiving is not None and not receiving.done():
            receiving.cancel()


CHECKPOINT_ERROR = "The gateway worker stopped mid-stream; billed from the stream's last checkpoint."


def reserved(event: UsageEvent, plan) -> UsageEvent:
    """``event`` settled against its reservation ``plan``."""
    if event.cost > plan.est_cost:
        # an upstream that produced more than the limit it was sent (or a prompt longer
        # than counted) is charged what was reserved, never more: the reservation is what
        # the balance and the budget were checked against
        event.cost = plan.est_cost
    if plan.quotas:
        event.quotas = plan.quotas  # the periods it counts in, for the settled roll-up
    return event


def checkpoint_event(ctx: Context, record: UsageRecord, plan) -> UsageEvent | None:
    """The usage event of a stream as if it were cut now (None before it produced
    anything): what the reaper bills if this worker dies before the stream ends."""
    if record.progress is None:
        return None
    usage = record.progress()
    if not usage.completion_tokens:
        return None
    cut = dataclasses.replace(
        record, usage=usage, usage_estimated=True, status_code=502, error=CHECKPOINT_ERROR
    )
    return reserved(usage_event(ctx, cut), plan)


def _plan(ctx: Context, call, record: UsageRecord, **tokens):
    """The reservation of this request (``tokens``: its prompt and completion, if known;
    a gateway tool loop reserves for every round it may take)."""
    plan = build_plan(
        rid=ctx.request_id,
        key=ctx.key,
        body=call.body,
        request_type=record.request_type,
        price=record.price,
        model_max=call.model_max,
        **tokens,
    )
    return scale_plan(plan, call.rounds) if call.rounds > 1 else plan


def usage_event(ctx: Context, record: UsageRecord) -> UsageEvent:
    usage = record.usage
    key = ctx.key
    produced = usage is not None and (usage.prompt_tokens or usage.completion_tokens)
    price = record.price
    cost = 0
    # a failed call costs nothing; a cut or abandoned stream costs what was produced
    billable = record.status_code < 400 or record.usage_estimated or record.charge_on_failure
    if key is not None and produced and billable:
        cost = token_cost(
            price,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            multiplier=key.multiplier,
            requests=record.rounds,  # a per-request model price counts every upstream call
        )
    if key is not None and billable:
        cost += record.extra_cost  # the gateway's own tools (web searches), priced by the loop
    return UsageEvent(
        request_id=ctx.request_id,
        ts=ctx.started_wall,
        user_id=key.user_id if key else None,
        key_id=key.id if key else None,
        provider_id=record.provider_id,
        price_id=price.id if price is not None else None,
        request_type=record.request_type,
        endpoint=record.endpoint,
        model_requested=record.model_requested,
        model_upstream=record.model_upstream,
        model_billed=record.model_billed or record.model_requested,
        providers_tried=record.providers_tried,
        stream=record.stream,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        cached_tokens=usage.cached_tokens if usage else 0,
        usage_estimated=record.usage_estimated,
        cost=cost,
        status_code=record.status_code,
        error=record.error,
        latency_ms=int((time.monotonic() - ctx.started) * 1000),
        ttft_ms=record.ttft_ms,
        client_ip=ctx.client_ip,
        request_bytes=ctx.request_bytes,
        response_bytes=ctx.response_bytes,
        client_disconnected=record.client_disconnected,
        breakdown=record.breakdown,
    )
