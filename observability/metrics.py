"""Prometheus metrics of the relay, fed from the one usage event per request.

The hot path pays for one call, :meth:`RelayMetrics.observe`: a dict look-up and a few
integer additions into this worker's own tallies (about a microsecond; docs/decisions.md).
Every ``FLUSH_INTERVAL`` the relay's flusher (relay/metrics.py, on the worker's event loop)
moves the tallies into prometheus-client's metrics, turning ids into names and bounding the
labels (an unknown model is ``other``, a path with an id is its route), and sets the gauges
from the relay's own state (breakers, in-flight upstream calls, buffered usage).

Under gunicorn every worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
(gunicorn.conf.py makes and cleans the directory and marks dead workers), and a scrape of
any worker reads all of them. Without that variable (the single-process embedded default)
the values live in this process's default registry.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import Counter, Gauge, Histogram

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0  # seconds between moving the tallies into the exported metrics
MAX_MODELS = 500  # distinct model labels at most; the rest is "other"

# latency and time to first token, in milliseconds (the event's unit); exported in seconds
BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000)
BUCKETS = tuple(ms / 1000 for ms in BOUNDS_MS)

REQUEST_LABELS = ("model", "provider", "endpoint", "status")

REQUESTS = Counter("gateway_requests", "Relay requests finished.", REQUEST_LABELS)
LATENCY = Histogram(
    "gateway_request_duration_seconds",
    "Time from the request's arrival to its last byte.",
    REQUEST_LABELS,
    buckets=BUCKETS,
)
TTFT = Histogram(
    "gateway_time_to_first_token_seconds",
    "Time from the request's arrival to the first byte of the answer (streams: the first chunk).",
    REQUEST_LABELS,
    buckets=BUCKETS,
)
TOKENS = Counter(
    "gateway_tokens", "Tokens billed, by kind (prompt, completion, cached).", ("model", "provider", "type")
)
COST = Counter(
    "gateway_cost", "Amount charged, in the billing currency's unit.", ("model", "provider", "currency")
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors",
    "Failed upstream attempts (failovers included), by class.",
    ("provider", "class"),
)
BREAKER = Gauge(
    "gateway_breaker_state",
    "Circuit breaker of a provider: 0 closed, 1 half-open, 2 open (the worst across workers).",
    ("provider",),
    multiprocess_mode="livemax",
)
IN_FLIGHT = Gauge(
    "gateway_upstream_in_flight",
    "Upstream calls in progress, summed over workers.",
    ("provider",),
    multiprocess_mode="livesum",
)
BUFFERED = Gauge(
    "gateway_usage_buffered_events",
    "Usage events held by workers, not yet handed to settlement (or to Redis).",
    multiprocess_mode="livesum",
)

CLOSED, HALF_OPEN, OPEN = 0, 1, 2


def error_class(status: int) -> str:
    """The class of a failed upstream attempt, from the status the relay recorded for it
    (504: a timeout; 502 without an answer: the connection failed)."""
    if status == 0:
        return "bad_response"  # answered, then the stream broke or the body was unreadable
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status == 402:
        return "billing"
    if status in (408, 504):
        return "timeout"
    if status == 502:
        return "connection"
    if status >= 500:
        return "server_error"
    return "client_error"


class Tally:
    """One label set's additions since the last flush."""

    __slots__ = (
        "requests", "latency", "latency_sum", "ttft", "ttft_sum", "prompt", "completion", "cached", "cost",
    )  # fmt: skip

    def __init__(self) -> None:
        self.requests = 0
        self.latency = [0] * (len(BOUNDS_MS) + 1)
        self.latency_sum = 0
        self.ttft: list[int] | None = None
        self.ttft_sum = 0
        self.prompt = 0
        self.completion = 0
        self.cached = 0
        self.cost = 0


class RelayMetrics:
    def __init__(self) -> None:
        self.tallies: dict[tuple, Tally] = {}
        self.failures: dict[tuple[int, int], int] = {}
        self.models: set[str] = set()
        self.names: dict[int, str] = {}
        self.seen_gauges: set[str] = set()

    # --- the hot path: one call per request --------------------------------------------

    def observe(self, event) -> None:
        """Count one finished request (a billing.events.UsageEvent) in this worker; never
        raises into the request's billing path."""
        try:
            self._observe(event)
        except Exception:
            logger.exception("metrics: event not counted")

    def _observe(self, event) -> None:
        model = event.model_billed or event.model_requested
        key = (model, event.provider_id, event.endpoint, event.status_code)
        tally = self.tallies.get(key)
        if tally is None:
            tally = self.tallies[key] = Tally()
        tally.requests += 1
        ms = event.latency_ms
        tally.latency[bisect_left(BOUNDS_MS, ms)] += 1
        tally.latency_sum += ms
        ttft = event.ttft_ms
        if ttft is not None:
            if tally.ttft is None:
                tally.ttft = [0] * (len(BOUNDS_MS) + 1)
            tally.ttft[bisect_left(BOUNDS_MS, ttft)] += 1
            tally.ttft_sum += ttft
        tally.prompt += event.prompt_tokens
        tally.completion += event.completion_tokens
        tally.cached += event.cached_tokens
        tally.cost += event.cost
        if event.status_code >= 400 or len(event.providers_tried) > 1:
            self._failures(event)
        elif event.provider_id not in self.names and event.provider_id is not None:
            self._learn_names(event.providers_tried)

    def _learn_names(self, tried: list) -> None:
        """Provider names as the attempts recorded them (the flush turns ids into these)."""
        for attempt in tried:
            if attempt.get("provider") is not None and attempt.get("name"):
                self.names[attempt["provider"]] = attempt["name"]

    def _failures(self, event) -> None:
        self._learn_names(event.providers_tried)
        failures = self.failures
        for attempt in event.providers_tried:
            status = attempt.get("status") or 0
            if status >= 400 and attempt.get("provider") is not None:
                key = (attempt["provider"], status)
                failures[key] = failures.get(key, 0) + 1
        if event.provider_id is not None and event.status_code >= 500:
            key = (event.provider_id, 0)  # the provider answered, then failed the answer
            failures[key] = failures.get(key, 0) + 1

    # --- the flush, off the request path -------------------------------------------------

    def take(self) -> tuple[dict[tuple, Tally], dict[tuple[int, int], int]]:
        """The tallies so far, leaving empty ones (call on the relay's event loop, where
        ``observe`` runs, so no addition falls between the two)."""
        tallies, failures = self.tallies, self.failures
        self.tallies, self.failures = {}, {}
        return tallies, failures

    def export(
        self,
        tallies: dict[tuple, Tally],
        failures: dict[tuple[int, int], int],
        *,
        states: dict[int, tuple[int, int]],
        buffered: int,
        known_models: Callable[[], Iterable[str]],
        endpoint_label: Callable[[str], str],
        currency: str,
    ) -> None:
        """Add the tallies to the exported metrics and set the gauges: ``states`` maps a
        provider id to (breaker state, upstream calls in flight) in this worker."""
        if len(self.models) < MAX_MODELS and any(key[0] not in self.models for key in tallies):
            self.models.update(list(known_models())[: MAX_MODELS - len(self.models)])
        endpoints: dict[str, str] = {}
        for (model, pid, path, status), tally in tallies.items():
            if path not in endpoints:
                endpoints[path] = endpoint_label(path)
            model_label = model if model in self.models else "other"
            labels = (model_label, self._provider(pid), endpoints[path], str(status))
            REQUESTS.labels(*labels).inc(tally.requests)
            _add(LATENCY.labels(*labels), tally.latency, tally.latency_sum)
            if tally.ttft is not None:
                _add(TTFT.labels(*labels), tally.ttft, tally.ttft_sum)
            kinds = (("prompt", tally.prompt), ("completion", tally.completion), ("cached", tally.cached))
            for kind, count in kinds:
                if count:
                    TOKENS.labels(labels[0], labels[1], kind).inc(count)
            if tally.cost:
                COST.labels(labels[0], labels[1], currency).inc(tally.cost / 1_000_000_000)
        for (pid, status), count in failures.items():
            UPSTREAM_ERRORS.labels(self._provider(pid), error_class(status)).inc(count)
        current = set()
        for pid, (state, in_flight) in states.items():
            name = self._provider(pid)
            current.add(name)
            BREAKER.labels(name).set(state)
            IN_FLIGHT.labels(name).set(in_flight)
        for name in self.seen_gauges - current:  # a provider this worker forgot (a reset)
            BREAKER.labels(name).set(CLOSED)
            IN_FLIGHT.labels(name).set(0)
        self.seen_gauges |= current
        BUFFERED.set(buffered)

    def _provider(self, pid: int | None) -> str:
        if pid is None:
            return ""  # answered by the gateway itself (refused, unknown model, limits)
        return self.names.get(pid) or f"#{pid}"


def _add(child, counts: list[int], total_ms: int) -> None:
    """Add a tally's bucket counts to a histogram child: what ``observe`` does per value,
    once per bucket (prometheus-client keeps per-bucket, not cumulative, values)."""
    for index, count in enumerate(counts):
        if count:
            child._buckets[index].inc(count)
    child._sum.inc(total_ms / 1000)


METRICS = RelayMetrics()
