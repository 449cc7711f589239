"""The relay's ASGI application (mounted by gateway_project.asgi for /v1/ and /mj/)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp
from django.conf import settings

from billing.pricing import token_cost
from gateway_project.logging import request_id_var
from keys.services import hash_key
from quotas.counters import LocalCounterStore, get_store

from . import handlers
from .config import CONFIG
from .db import db_async
from .errors import RelayError
from .http import ClientGone, Context
from .limits import build_plan, refusal_error
from .proxy import Forwarder, UsageRecord, in_background
from .usage import make_queue

logger = logging.getLogger("relay")

TOUCH_INTERVAL = 60.0  # last_used_at is written at most this often per key and worker

# path -> (handler preparing the upstream call, request type); all are POST
POST_ROUTES = {
    "/v1/chat/completions": (handlers.chat_completions, "chat"),
    "/v1/completions": (handlers.completions, "completion"),
    "/v1/embeddings": (handlers.embeddings, "embedding"),
    "/v1/messages": (handlers.messages, "messages"),
}
GET_ROUTES = {
    "/v1/usage": handlers.usage,
    "/v1/dashboard/billing/subscription": handlers.billing_subscription,
    "/v1/dashboard/billing/usage": handlers.billing_usage,
}
ANTHROPIC_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})


def _touch_key(key_id: int) -> None:
    from django.utils import timezone

    from keys.models import APIKey

    APIKey.objects.filter(pk=key_id).update(last_used_at=timezone.now())  # no signal: no cache flush


class RelayApp:
    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None
        self.forwarder: Forwarder | None = None
        self.usage = None
        self.touched: dict[int, float] = {}
        self.blocked: dict[str, float] = {}  # client IP -> end of its block (failed authentication)
        self.store = None
        self.reaper: asyncio.Future | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Lock | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def startup(self) -> None:
        if self.session is not None:
            return
        self.loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False)
        self.forwarder = Forwarder(self.session)
        self.usage = make_queue()
        self.store = get_store()
        if isinstance(self.store, LocalCounterStore):
            # embedded default: finished requests' events go to the in-process settlement,
            # and this process also releases reservations of requests that never finished
            self.store.on_event = self.usage.push
            self.reaper = asyncio.ensure_future(self._reap_forever())
        else:
            self.store.on_lost = self.usage.push  # usage whose flush to Redis failed

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(30)
            try:
                self.store.release_expired()  # in process: a few dict operations
            except Exception:
                logger.exception("releasing expired reservations failed")

    async def shutdown(self) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
            self.reaper = None
        if self.store is not None and self.store.remote:
            await self.store.aclose()  # unused leases back, finished requests flushed
        if self.usage is not None:
            await self.usage.close()
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def lifespan(self, scope, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("relay start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- requests -----------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if self.session is None:  # servers without lifespan support
            if self._starting is None:
                self._starting = asyncio.Lock()
            async with self._starting:
                await self.startup()
        ctx = Context.from_scope(scope, receive, send)
        ctx.anthropic = ctx.path in ANTHROPIC_PATHS
        token = request_id_var.set(ctx.request_id)
        try:
            await self.dispatch(ctx)
        except RelayError as exc:
            if not ctx.response_started:
                await ctx.error(exc)
        except ClientGone:
            pass  # nobody to answer; the usage event already says so
        except Exception:
            logger.exception("relay request failed", extra={"path": ctx.path})
            if not ctx.response_started:
                await ctx.error(
                    RelayError(500, "The gateway failed to handle this request.", type="api_error")
                )
        finally:
            request_id_var.reset(token)

    async def dispatch(self, ctx: Context) -> None:
        await CONFIG.check_version()
        entry = POST_ROUTES.get(ctx.path)
        if entry is not None:
            if ctx.method != "POST":
                raise RelayError(405, f"Use POST for {ctx.path}.")
            await self.authenticate(ctx)
            handler, request_type = entry
            record = UsageRecord(request_type=request_type, endpoint=ctx.path)
            await self.run(ctx, handler, record)
            return
        if ctx.path == "/v1/messages/count_tokens":
            if ctx.method != "POST":
                raise RelayError(405, f"Use POST for {ctx.path}.")
            await self.authenticate(ctx)
            await handlers.count_message_tokens(ctx)
            return
        if ctx.path in GET_ROUTES:
            if ctx.method != "GET":
                raise RelayError(405, f"Use GET for {ctx.path}.")
            await self.authenticate(ctx)
            await GET_ROUTES[ctx.path](ctx)
            return
        if ctx.path == "/v1/models" or ctx.path.startswith("/v1/models/"):
            if ctx.method != "GET":
                raise RelayError(405, f"Use GET for {ctx.path}.")
            await self.authenticate(ctx)
            if ctx.path == "/v1/models":
                await handlers.list_models(ctx)
            else:
                await handlers.retrieve_model(ctx, ctx.path[len("/v1/models/") :])
            return
        raise RelayError(404, f"Unknown endpoint {ctx.method} {ctx.path}.", code="unknown_url")

    async def run(self, ctx: Context, prepare, record: UsageRecord) -> None:
        """Run a billable request: reserve, forward, then settle the reservation with the
        actual use (or queue the usage event when nothing was reserved). Whatever happens,
        exactly one usage event leaves this method."""
        plan = None
        try:
            raw = await ctx.read_body()
            call, routes = await prepare(ctx, raw, record)
            wanted = build_plan(
                rid=ctx.request_id,
                key=ctx.key,
                body=call.body,
                request_type=record.request_type,
                price=record.price,
                model_max=call.model_max,
            )
            refusal = await self.store.reserve(wanted)
            if refusal is not None:
                raise refusal_error(refusal, ctx.key)
            plan = wanted  # reserved: from here on, the finish settles it
            if call.stream:
                # streams watch for the client leaving, to cancel the upstream at once
                task = asyncio.ensure_future(self.forwarder.forward(ctx, call, routes, record))
                await self._until_done_or_gone(ctx, task, record)
            else:
                await self.forwarder.forward(ctx, call, routes, record)
        except RelayError as exc:
            record.status_code = exc.status
            record.error = exc.message
            raise
        except ClientGone:
            record.client_disconnected = True
            record.status_code = 499
            raise
        except Exception as exc:  # answered by __call__ with a 500: the usage log says so too
            record.status_code = 500
            record.error = f"gateway error: {type(exc).__name__}"
            raise
        finally:
            event = self.usage_event(ctx, record)
            if plan is not None and plan.quotas:
                event["quotas"] = plan.quotas  # the periods it counts in, for the settled roll-up
            if plan is None:
                self.usage.push(event)
            else:
                # Redis: off the response path, in the worker's next flush (shutdown waits
                # for it); in process: at once
                tokens = event["prompt_tokens"] + event["completion_tokens"]
                finish = self.store.finish if self.store.remote else self.store.finish_sync
                finish(plan, tokens=tokens, cost=event["cost"], event=event)

    async def _until_done_or_gone(self, ctx: Context, task: asyncio.Task, record: UsageRecord) -> None:
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

    @staticmethod
    def _blocked_error(until: float) -> RelayError:
        wait = max(int(until - time.time() + 0.999), 1)
        return RelayError(
            429,
            "Too many failed authentication attempts from this address; try again later.",
            code="too_many_auth_failures",
            headers=[(b"retry-after", str(wait).encode())],
        )

    async def _key(self, ctx: Context):
        headers = ctx.headers
        raw = headers.get(b"authorization")
        plain = None
        if raw is not None:
            scheme, _, value = raw.partition(b" ")
            if scheme.lower() == b"bearer" and value.strip():
                plain = value.strip().decode("latin-1")
        if plain is None:
            value = headers.get(b"x-api-key") or headers.get(b"mj-api-secret")
            if value:
                plain = value.strip().decode("latin-1")
        if not plain:
            raise RelayError(
                401,
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'.",
                code="missing_api_key",
            )
        key = await CONFIG.key(hash_key(plain))
        if key is None:
            raise RelayError(401, "Incorrect API key provided.", code="invalid_api_key")
        refusal = key.refusal(time.time())
        if refusal is not None:
            status, code, message = refusal
            raise RelayError(status, message, code=code)
        return key

    async def authenticate(self, ctx: Context) -> None:
        ip = ctx.client_ip or "-"
        blocked_until = self.blocked.get(ip)
        if blocked_until is not None:
            if blocked_until > time.time():
                raise self._blocked_error(blocked_until)
            del self.blocked[ip]
        try:
            key = await self._key(ctx)
        except RelayError as exc:
            if exc.status == 401:
                failures = await self.store.count_auth_failure(ip)
                if failures > settings.RELAY_AUTH_FAILURES_PER_MINUTE:
                    until = (time.time() // 60 + 1) * 60
                    if len(self.blocked) > 10_000:
                        self.blocked = {k: v for k, v in self.blocked.items() if v > time.time()}
                    self.blocked[ip] = until
                    raise self._blocked_error(until) from None
            raise
        if not key.ip_allowed(ctx.client_ip):
            raise RelayError(
                403, f"This API key may not be used from {ctx.client_ip}.", code="ip_not_allowed"
            )
        ctx.key = key
        now = time.monotonic()
        if now - self.touched.get(key.id, -TOUCH_INTERVAL) >= TOUCH_INTERVAL:
            self.touched[key.id] = now
            in_background(db_async(_touch_key, thread_sensitive=False)(key.id))

    def usage_event(self, ctx: Context, record: UsageRecord) -> dict:
        usage = record.usage
        key = ctx.key
        produced = usage is not None and (usage.prompt_tokens or usage.completion_tokens)
        price = record.price
        cost = 0
        # a failed call costs nothing; a cut or abandoned stream costs what was produced
        if key is not None and produced and (record.status_code < 400 or record.usage_estimated):
            cost = token_cost(
                price,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cached_tokens=usage.cached_tokens,
                multiplier=key.multiplier,
            )
        return {
            "request_id": ctx.request_id,
            "ts": ctx.started_wall,
            "user_id": key.user_id if key else None,
            "key_id": key.id if key else None,
            "provider_id": record.provider_id,
            "price_id": price.id if price is not None else None,
            "request_type": record.request_type,
            "endpoint": record.endpoint,
            "model_requested": record.model_requested,
            "model_upstream": record.model_upstream,
            "model_billed": record.model_billed or record.model_requested,
            "providers_tried": record.providers_tried,
            "stream": record.stream,
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "cached_tokens": usage.cached_tokens if usage else 0,
            "usage_estimated": record.usage_estimated,
            "cost": cost,
            "status_code": record.status_code,
            "error": record.error,
            "latency_ms": int((time.monotonic() - ctx.started) * 1000),
            "ttft_ms": record.ttft_ms,
            "client_ip": ctx.client_ip,
            "request_bytes": ctx.request_bytes,
            "response_bytes": ctx.response_bytes,
            "client_disconnected": record.client_disconnected,
        }
