"""The one path every billable request takes, whatever its endpoint:

read the body -> the endpoint prepares the call (validation, model, routes) -> limits and
reservation in one counter-store step -> forward with failover (streams watched for the
client leaving) -> exactly one typed usage event, settled against the reservation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from billing.events import UsageEvent
from billing.pricing import token_cost
from observability.metrics import METRICS

from .endpoints import Endpoint
from .errors import RelayError
from .forward import Forwarder, UsageRecord
from .http import ClientGone, Context
from .limits import build_plan, refusal_error, scale_plan

logger = logging.getLogger("relay")
STORE_RETRY_AFTER = b"2"


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
            wanted = build_plan(
                rid=ctx.request_id,
                key=ctx.key,
                body=call.body,
                request_type=record.request_type,
                price=record.price,
                model_max=call.model_max,
            )
            if call.rounds > 1:  # a gateway tool loop: reserve for every round it may take
                wanted = scale_plan(wanted, call.rounds)
            refusal = await self._reserve(wanted)
            if refusal is not None:
                raise refusal_error(refusal, ctx.key)
            plan = wanted  # reserved: from here on, the finish settles it
            if call.run is not None:  # several upstream calls (the gateway's tool loop)
                work = call.run(self.forwarder, ctx, routes, record)
            else:
                work = self.forwarder.forward(ctx, call, routes, record)
            if call.stream:
                # streams watch for the client leaving, to cancel the upstream at once
                await self._until_done_or_gone(ctx, asyncio.ensure_future(work), record)
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
            METRICS.observe(event)  # in-process tallies only; exported off the request path
            if plan is None:
                self.usage.push(event)
            else:
                if plan.quotas:
                    event.quotas = plan.quotas  # the periods it counts in, for the settled roll-up
                # Redis: off the response path, in the worker's next flush (shutdown waits
                # for it); in process: at once
                finish = self.store.finish if self.store.remote else self.store.finish_sync
                finish(plan, tokens=event.tokens, cost=event.cost, event=event)

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
    async def _until_done_or_gone(ctx: Context, task: asyncio.Task, record: UsageRecord) -> None:
        async def gone() -> None:
            while True:
                message = await ctx.receive()
                if message["type"] == "http.disconnect":
                    return

        watcher = asyncio.ensure_future(gone())
        try:
            done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # this request is being cancelled (shutdown): stop the stream, but let the
            # forwarder record what was produced before the usage event is built
            task.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task})
            raise
        if task in done:
            watcher.cancel()
            task.result()  # re-raise the handler's error, if any
            return
        task.cancel()
        record.client_disconnected = True
        try:
            await task
        except asyncio.CancelledError:
            pass  # the forwarder recorded the usage produced so far before it stopped
        except Exception:
            logger.warning("stream ended with an error after the client left", exc_info=True)
        if record.status_code < 400:
            record.status_code = 499  # nginx's "client closed request"


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
