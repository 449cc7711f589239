"""The relay's side of the Prometheus metrics: a task on the worker's event loop that moves
the per-request tallies into the exported metrics every second and sets the gauges from
the relay's own state (observability/metrics.py says why the hot path only tallies). It
makes no database query: provider names come from the events' attempts and the route cache."""

from __future__ import annotations

import asyncio
import logging
import time

from django.conf import settings

from observability.metrics import CLOSED, FLUSH_INTERVAL, HALF_OPEN, METRICS, OPEN

from .config import CONFIG
from .routes import TABLE
from .routing import ROUTER

logger = logging.getLogger(__name__)


def endpoint_label(path: str) -> str:
    """The route a path belongs to: itself for fixed paths, ``prefix*`` for those with an
    id in them, ``other`` for anything else (labels stay few whatever clients send)."""
    if path in TABLE.exact:
        return path
    prefix = next((prefix for prefix, _ in TABLE.prefixes if path.startswith(prefix)), None)
    return f"{prefix}*" if prefix else "other"


def known_models() -> list[str]:
    """Model names this worker has routed or priced (the label set of ``model``)."""
    names = [slug for slug, info in CONFIG.models.items() if info is not None]
    names.extend(slug for slug, (price, _) in CONFIG.prices.items() if price is not None)
    return names


def breaker_states() -> dict[int, tuple[int, int]]:
    now = time.monotonic()
    states = {}
    for pid, state in ROUTER.states.items():
        if state.half_open_probe:
            breaker = HALF_OPEN
        elif state.open_until and now < state.open_until:
            breaker = OPEN
        else:
            breaker = CLOSED
        states[pid] = (breaker, state.in_flight)
    return states


class MetricsFlusher:
    def __init__(self, usage) -> None:
        self.usage = usage
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
        await self.flush()  # what the last second counted

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.flush()
            except Exception:
                logger.exception("metrics flush failed")

    async def flush(self) -> None:
        tallies, failures = METRICS.take()
        for info in CONFIG.models.values():  # current names (an operator may rename a provider)
            for route in info.routes if info is not None else ():
                METRICS.names[route.provider_id] = route.provider_name
        METRICS.export(
            tallies,
            failures,
            states=breaker_states(),
            buffered=len(self.usage.buffer) if self.usage is not None else 0,
            known_models=known_models,
            endpoint_label=endpoint_label,
            currency=settings.BILLING_CURRENCY,
        )
