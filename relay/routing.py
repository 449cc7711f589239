"""Choosing providers: strategies, per-provider circuit breakers, in-flight and latency.

State is per worker process (a breaker that opens in one worker does not open in the
others; each learns from its own traffic within a few requests). Auto-disable on
credential or balance errors is shared, through the database and the config version.
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass

from django.conf import settings

from .config import Route

ERROR_RATE_WINDOW = 20  # or this many recent outcomes ...
ERROR_RATE_THRESHOLD = 0.5  # ... with at least this share of failures
LATENCY_ALPHA = 0.2  # weight of the newest sample in the moving average


@dataclass(slots=True)
class ProviderState:
    consecutive_failures: int = 0
    recent: int = 0  # bit history of the last ERROR_RATE_WINDOW outcomes, 1 = failure
    recent_count: int = 0
    open_until: float = 0.0
    half_open_probe: bool = False  # one trial request is in flight after the cool-down
    in_flight: int = 0
    latency_ms: float | None = None


class Router:
    def __init__(self) -> None:
        self.states: dict[int, ProviderState] = {}
        self.counters: dict[str, itertools.count] = {}
        self.rng = random.Random()

    def state(self, provider_id: int) -> ProviderState:
        state = self.states.get(provider_id)
        if state is None:
            state = self.states[provider_id] = ProviderState()
        return state

    # --- breaker ------------------------------------------------------------------------

    def available(self, provider_id: int, now: float) -> bool:
        state = self.states.get(provider_id)
        if state is None or not state.open_until:
            return True  # closed
        if now < state.open_until:
            return False  # open: cooling down
        # cool-down over: half-open. This request is the probe; re-arm the cool-down so
        # no other request follows until the probe has answered (or a probe never sent
        # is replaced by a new one after another cool-down).
        state.half_open_probe = True
        state.open_until = now + settings.RELAY_BREAKER_COOLDOWN
        return True

    def cooling_down(self, provider_id: int) -> bool:
        state = self.states.get(provider_id)
        return bool(state and state.open_until and time.monotonic() < state.open_until)

    def record_success(self, provider_id: int, latency_ms: float) -> None:
        state = self.state(provider_id)
        state.consecutive_failures = 0
        state.open_until = 0.0
        state.half_open_probe = False
        self._outcome(state, failed=False)
        if state.latency_ms is None:
            state.latency_ms = latency_ms
        else:
            state.latency_ms += LATENCY_ALPHA * (latency_ms - state.latency_ms)

    def record_failure(self, provider_id: int) -> None:
        state = self.state(provider_id)
        state.consecutive_failures += 1
        self._outcome(state, failed=True)
        failures = bin(state.recent).count("1")
        rate_tripped = (
            state.recent_count >= ERROR_RATE_WINDOW // 2
            and failures / state.recent_count >= ERROR_RATE_THRESHOLD
        )
        if (
            state.half_open_probe
            or state.consecutive_failures >= settings.RELAY_BREAKER_FAILURES
            or rate_tripped
        ):
            state.open_until = time.monotonic() + settings.RELAY_BREAKER_COOLDOWN
            state.half_open_probe = False

    @staticmethod
    def _outcome(state: ProviderState, *, failed: bool) -> None:
        mask = (1 << ERROR_RATE_WINDOW) - 1
        state.recent = ((state.recent << 1) | int(failed)) & mask
        state.recent_count = min(state.recent_count + 1, ERROR_RATE_WINDOW)

    # --- ordering -----------------------------------------------------------------------

    def order(self, routes: list[Route], strategy: str, key: str) -> list[Route]:
        """Candidates in the order to try them: available ones by strategy, then the ones
        cooling down as a last resort (better a slow answer than none)."""
        if not routes:
            return []
        now = time.monotonic()
        if len(routes) == 1:
            return routes
        ready = [r for r in routes if self.available(r.provider_id, now)]
        cooling = [r for r in routes if r not in ready]
        return self._by_strategy(ready, strategy, key) + cooling

    def _by_strategy(self, routes: list[Route], strategy: str, key: str) -> list[Route]:
        if len(routes) <= 1:
            return list(routes)
        if strategy == "round_robin":
            counter = self.counters.setdefault(key, itertools.count())
            start = next(counter) % len(routes)
            ordered = sorted(routes, key=lambda r: (-r.tier, r.provider_id))
            return ordered[start:] + ordered[:start]
        if strategy == "least_connections":
            return sorted(
                routes, key=lambda r: (self.state(r.provider_id).in_flight, -r.tier, self.rng.random())
            )
        if strategy == "lowest_latency":

            def latency(route: Route) -> float:
                measured = self.state(route.provider_id).latency_ms
                return 0.0 if measured is None else measured  # unmeasured first, to learn it

            return sorted(routes, key=lambda r: (latency(r), self.rng.random()))
        # weighted: highest tier first; inside a tier, weighted random order
        ordered: list[Route] = []
        for tier in sorted({r.tier for r in routes}, reverse=True):
            ordered.extend(self._weighted_shuffle([r for r in routes if r.tier == tier]))
        return ordered

    def _weighted_shuffle(self, routes: list[Route]) -> list[Route]:
        if len(routes) == 1:
            return routes
        # Efraimidis-Spirakis: sort by u^(1/w), a weighted random permutation
        return sorted(routes, key=lambda r: self.rng.random() ** (1.0 / r.weight), reverse=True)

    def reset(self) -> None:
        self.states.clear()
        self.counters.clear()


ROUTER = Router()
