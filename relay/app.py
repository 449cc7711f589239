"""The relay's ASGI application (mounted by gateway_project.asgi for /v1/ and /mj/)."""

from __future__ import annotations

import asyncio
import logging
import time

from django.conf import settings
from django.utils.module_loading import import_string

from core.logging import request_id_var
from core.runtime import tune_gc
from observability.settlement import LOCAL_QUEUES
from quotas.counters import LocalCounterStore, get_store

from . import tokens
from .auth import Authenticator
from .config import CONFIG
from .db import db_async
from .errors import RelayError
from .forward import Forwarder
from .http import ClientGone, Context
from .metrics import MetricsFlusher
from .pipeline import Pipeline
from .protocols.openai import OPENAI
from .routes import TABLE
from .upstream_http import UpstreamClient
from .usage import make_queue

logger = logging.getLogger("relay")

# beat schedule entry -> task function, run in process on the embedded default
IN_PROCESS_JOBS = {
    "check-providers": "providers.tasks.check_providers",
    "purge-usage-logs": "billing.tasks.purge_usage_logs",
    "purge-responses": "conversations.tasks.purge_responses",
    "poll-midjourney": "jobs.tasks.poll_midjourney",
}
JOBS_TICK = 0.5
FIRST_RUN_DELAY = 10.0  # the first probe soon after start, not a whole interval later


class RelayApp:
    def __init__(self) -> None:
        self.session: UpstreamClient | None = None  # provider calls
        self.forwarder: Forwarder | None = None
        self.usage = None
        self.auth = Authenticator()
        self.pipeline: Pipeline | None = None
        self.store = None
        self.reaper: asyncio.Future | None = None
        self.jobs: asyncio.Future | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Lock | None = None
        self.metrics: MetricsFlusher | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def startup(self) -> None:
        if self.session is not None:
            return
        self.loop = asyncio.get_running_loop()
        self.session = UpstreamClient()
        self.forwarder = Forwarder(self.session)
        self.usage = make_queue()
        self.store = self.store or get_store()  # the process's store, unless given one
        if isinstance(self.store, LocalCounterStore):
            # embedded default: finished requests' events go to the in-process settlement,
            # and this process also releases reservations of requests that never finished
            self.store.on_event = self.usage.push
            self.reaper = asyncio.ensure_future(self._reap_forever())
            # no Celery beat here: this process runs the periodic jobs that keep the
            # gateway healthy (re-enabling providers that pass a probe, the log purge)
            self.jobs = asyncio.ensure_future(self._periodic_jobs())
        else:
            self.store.on_lost = self.usage.push  # usage whose flush to Redis failed
        self.pipeline = Pipeline(self.forwarder, self.store, self.usage)
        if not self.store.remote:
            LOCAL_QUEUES.add(self.usage)  # the whole settlement backlog, for /metrics
        self.metrics = MetricsFlusher(self.usage)
        self.metrics.start()
        # the tokenizer (a 100,000-entry table, ~0.5 s to build) is loaded now, not by the
        # first request to count a prompt, and is frozen with the rest below
        await asyncio.get_running_loop().run_in_executor(None, tokens.encoding)
        tune_gc(settings.GC_GEN0_THRESHOLD)  # last: what start-up made is frozen

    @property
    def blocked(self) -> dict[str, float]:
        return self.auth.blocked

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(30)
            try:
                self.store.release_expired()  # in process: a few dict operations
            except Exception:
                logger.exception("releasing expired reservations failed")

    async def _periodic_jobs(self) -> None:
        """Celery beat's schedule for the jobs the embedded default needs, run in a worker
        thread of this process (settlement and reservations have their own paths)."""
        last: dict[str, float] = {}
        while True:
            await asyncio.sleep(JOBS_TICK)
            now = time.monotonic()
            for name, task_path in IN_PROCESS_JOBS.items():
                interval = float(settings.CELERY_BEAT_SCHEDULE.get(name, {}).get("schedule", 0) or 0)
                if interval <= 0:
                    continue
                if name not in last:  # the first run soon after start, not a whole interval later
                    last[name] = now - interval + min(interval, FIRST_RUN_DELAY)
                if now - last[name] < interval:
                    continue
                last[name] = now
                try:
                    task = import_string(task_path)
                    await db_async(task, thread_sensitive=False)()
                except Exception:
                    logger.exception("periodic job failed", extra={"job": name})

    async def shutdown(self) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
            self.reaper = None
        if self.jobs is not None:
            self.jobs.cancel()
            self.jobs = None
        if self.metrics is not None:
            await self.metrics.stop()
            self.metrics = None
        if self.store is not None and self.store.remote:
            await self.store.aclose()  # unused leases back, finished requests flushed
        if self.usage is not None:
            await self.usage.close()
            LOCAL_QUEUES.discard(self.usage)
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
        ctx.protocol = TABLE.protocol_for(ctx.path) or OPENAI
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
        endpoint = TABLE.match(ctx.method, ctx.path)
        if endpoint.authenticated:
            await self.auth.authenticate(ctx, self.store)
        if endpoint.prepare is not None:
            await self.pipeline.run(ctx, endpoint)
        else:
            await endpoint.handle(ctx, self)
